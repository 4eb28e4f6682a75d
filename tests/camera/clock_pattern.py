"""The wall clock drawn into a video frame as big blocks, and read back after H.264.

The clock camera (``clock_camera.py``) draws, into each raw frame before
the encoder, the moment it made the frame: milliseconds since the epoch modulo
2^32 as 32 black/white blocks, then the same 32 bits inverted (a misread frame
fails the check and is counted, never measured).  Blocks are width/16 pixels
square, four rows of sixteen at the top; the rest is mid grey.  A viewer reads
the centre pixel of each block from the decoded luma plane.

Pure functions, no dependencies: the camera runs under the system Python, the
viewer under the venv.
"""
from __future__ import annotations

BITS = 32
COLUMNS = 16
BLACK, WHITE, GREY = 16, 235, 128  # video-range luma
MODULUS = 1 << BITS


def block_size(width: int, height: int) -> int:
    """The side of one block; the code needs four rows of sixteen."""
    size = width // COLUMNS
    if size < 4 or 4 * size > height:
        raise ValueError(f"{width}x{height} is too small for the clock code")
    return size


def code_bits(ms: int) -> list[int]:
    """The 64 bits drawn for ``ms``: the value (most significant first), then its complement."""
    value = ms % MODULUS
    bits = [(value >> (BITS - 1 - i)) & 1 for i in range(BITS)]
    return bits + [1 - b for b in bits]


def i420_frame(width: int, height: int, ms: int) -> bytes:
    """One I420 frame (luma, then both chroma planes at grey) carrying ``ms``."""
    size = block_size(width, height)
    bits = code_bits(ms)
    rows = []
    for row in range(len(bits) // COLUMNS):
        line = b"".join(bytes([WHITE if bit else BLACK]) * size for bit in bits[row * COLUMNS:(row + 1) * COLUMNS])
        line += bytes([GREY]) * (width - len(line))
        rows.append(line * size)
    luma = b"".join(rows)
    luma += bytes([GREY]) * (width * height - len(luma))
    chroma = bytes([128]) * ((width // 2) * (height // 2) * 2)
    return luma + chroma


def read_ms(luma: bytes, stride: int, width: int, height: int) -> int | None:
    """The ``ms`` drawn into a decoded frame, or None when the code does not check out."""
    size = block_size(width, height)
    bits = []
    for i in range(2 * BITS):
        y = (i // COLUMNS) * size + size // 2
        x = (i % COLUMNS) * size + size // 2
        bits.append(1 if luma[y * stride + x] > GREY else 0)
    value, check = bits[:BITS], bits[BITS:]
    if any(a == b for a, b in zip(value, check, strict=True)):
        return None
    return int("".join(map(str, value)), 2)


def age_ms(drawn: int, now_ms: int) -> int:
    """How long ago (ms) a frame drawn at ``drawn`` (mod 2^32) was made, seen at ``now_ms``."""
    return (now_ms - drawn) % MODULUS
