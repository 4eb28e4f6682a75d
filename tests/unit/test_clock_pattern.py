"""The clock code the latency bench draws into frames (tests/camera/clock_pattern.py)."""
from __future__ import annotations

import pytest

from camera.clock_pattern import MODULUS, WHITE, age_ms, block_size, i420_frame, read_ms


@pytest.mark.parametrize("ms", [0, 1, 1764300000123, MODULUS - 1])
def test_a_drawn_time_reads_back(ms):
    frame = i420_frame(320, 240, ms)
    assert len(frame) == 320 * 240 * 3 // 2
    assert read_ms(frame, 320, 320, 240) == ms % MODULUS


def test_a_padded_stride_reads_back():
    width, height, stride = 320, 240, 384  # decoders pad lines
    luma = i420_frame(width, height, 123456789)[:width * height]
    padded = b"".join(luma[y * width:(y + 1) * width] + bytes(stride - width) for y in range(height))
    assert read_ms(padded, stride, width, height) == 123456789


def test_a_misread_block_is_refused_not_measured():
    size = block_size(320, 240)
    frame = bytearray(i420_frame(320, 240, 0))  # all value bits black, all check bits white
    frame[(size // 2) * 320 + size // 2] = WHITE  # the first value bit now equals its check bit
    assert read_ms(bytes(frame), 320, 320, 240) is None


def test_age_wraps_with_the_code():
    assert age_ms(MODULUS - 10, MODULUS + 70) == 80
    assert age_ms(5, 85) == 80


def test_a_frame_too_small_for_the_code_is_refused():
    with pytest.raises(ValueError, match="too small"):
        block_size(32, 24)
