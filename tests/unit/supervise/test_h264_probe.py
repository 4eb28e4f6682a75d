"""Reading a stream's H.264 profile-level-id from ffprobe's answer (pure)."""
from __future__ import annotations

import json

from agent.config.model import StreamConfig
from agent.supervise.h264_probe import probe_argv, profile_from_extradata, profile_from_probe
from agent.supervise.rtp_source import can_bind, pick

#: ffprobe -show_data of the test camera with profile=high: Annex B SPS (67 64 00 0d) then PPS.
HIGH_DUMP = ("\n00000000: 0000 0001 6764 000d acb4 0a0f d80b 5060  ....gd........P`\n"
             "00000010: 606a 5000 0003 0010 0000 0303 28f1 42aa  `jP.........(.B.\n"
             "00000020: 0000 0001 68ef 3cb0                      ....h.<.\n")


def test_the_sps_bytes_are_the_profile_level_id():
    assert profile_from_probe(json.dumps({"streams": [{"codec_name": "h264", "extradata": HIGH_DUMP}]})) == "64000d"
    assert profile_from_extradata(bytes.fromhex("0000016742c00dda")) == "42c00d"  # 3-byte start code
    assert profile_from_extradata(bytes.fromhex("014d401fffe1")) == "4d401f"      # avcC


def test_no_profile_from_anything_else():
    assert profile_from_probe(b"not json") is None
    assert profile_from_probe(json.dumps({"streams": []})) is None
    assert profile_from_probe(json.dumps({"streams": [{"codec_name": "hevc", "extradata": HIGH_DUMP}]})) is None
    assert profile_from_probe(json.dumps({"streams": [{"codec_name": "h264"}]})) is None
    assert profile_from_extradata(bytes.fromhex("0000000168ef3cb0")) is None  # a PPS only
    assert profile_from_extradata(b"\x00\x00\x01\x67\x64") is None             # cut short


def test_the_probe_opens_the_input_as_ffmpeg_does():
    argv = probe_argv("ffprobe", StreamConfig(id="cam1", url="rtsp://cam/1", input_args=("-fflags", "nobuffer")))
    assert argv[argv.index("-i") + 1] == "rtsp://cam/1" and "-rtsp_transport" in argv and "nobuffer" in argv


def test_a_picked_source_port_and_its_rtcp_neighbour_are_free():
    port = pick()
    assert port is not None and can_bind(port)
    assert not can_bind(65535) and not can_bind(0)


def test_an_rtsp_camera_that_answers_nothing_is_not_probed():
    """A listener that accepts and never answers (a black hole), a closed port, a real answer."""
    import asyncio
    import socket
    import time

    from agent.supervise.h264_probe import rtsp_answers

    async def check() -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readline()
            writer.write(b"RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\n\r\n")
            await writer.drain()
            writer.close()

        camera = await asyncio.start_server(answer, "127.0.0.1", 0)
        silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody ever reads
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refused
        try:
            cam_port, hole, shut = (camera.sockets[0].getsockname()[1], silent.getsockname()[1],
                                    closed.getsockname()[1])
            assert await rtsp_answers(f"rtsp://user:pw@127.0.0.1:{cam_port}/x", 2)  # 401 is an answer
            start = time.monotonic()
            assert not await rtsp_answers(f"rtsp://127.0.0.1:{hole}/x", 0.5)
            assert time.monotonic() - start < 1.5
            assert not await rtsp_answers(f"rtsp://127.0.0.1:{shut}/x", 0.5)
            assert await rtsp_answers("/srv/video/loop.mp4") and await rtsp_answers("rtsps://127.0.0.1:1/x")
        finally:
            camera.close()
            silent.close()
            closed.close()

    asyncio.run(check())
