"""Pure FFmpeg argv building and the ``-progress`` parser."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.config.model import MIN_STALL_TIMEOUT, PROGRESS_PERIOD, RecordingConfig, StreamConfig
from agent.supervise.ffmpeg import (
    PROGRESS_LINE_MAX,
    Launch,
    Progress,
    ProgressParser,
    RtpTarget,
    build_argv,
    start_stamp,
)

ROOT = Path("/var/lib/vas/recordings")
URL = "rtsp://admin:hunter22@10.0.0.5:554/Streaming/101"
STAMP = "20261124T142613123Z"


def stream(**kw) -> StreamConfig:
    kw.setdefault("url", URL)
    return StreamConfig(id="lobby", **kw)


def launch(stamp: str = STAMP, sid: str = "lobby") -> Launch:
    return Launch(ROOT / sid, stamp)


def value_after(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, f"{flag} appears {argv.count(flag)} times in {argv}"
    return argv[argv.index(flag) + 1]


# -- templated mode --------------------------------------------------------------

def test_templated_argv_pulls_rtsp_over_tcp_with_a_socket_timeout():
    argv = build_argv(stream(), launch(), ffmpeg="/usr/bin/ffmpeg")
    assert argv[0] == "/usr/bin/ffmpeg"
    assert value_after(argv, "-rtsp_transport") == "tcp"
    assert int(value_after(argv, "-timeout")) > 0
    assert value_after(argv, "-i") == URL
    assert argv.index("-rtsp_transport") < argv.index("-i")
    assert argv.index("-timeout") < argv.index("-i")
    assert "-nostdin" in argv


def test_progress_goes_to_stdout():
    argv = build_argv(stream(), launch())
    assert value_after(argv, "-progress") == "pipe:1"
    assert argv.index("-progress") < argv.index("-i")  # a global option


def test_progress_period_matches_the_stall_rule():
    argv = build_argv(stream(), launch())
    assert float(value_after(argv, "-stats_period")) == PROGRESS_PERIOD
    assert MIN_STALL_TIMEOUT >= 2 * PROGRESS_PERIOD


def test_default_ffmpeg_binary():
    assert build_argv(stream(), launch())[0] == "ffmpeg"


def test_rtsp_transport_is_configurable():
    assert value_after(build_argv(stream(rtsp_transport="udp"), launch()), "-rtsp_transport") == "udp"


def test_input_args_come_before_the_input():
    argv = build_argv(stream(input_args=("-fflags", "+genpts", "-analyzeduration", "5M")), launch())
    i = argv.index("-i")
    assert argv[i - 4:i] == ["-fflags", "+genpts", "-analyzeduration", "5M"]
    assert argv.index("-rtsp_transport") < i - 4


def test_hls_recording_output():
    argv = build_argv(stream(), launch())
    assert value_after(argv, "-f") == "hls"
    assert value_after(argv, "-hls_time") == "10"
    assert "temp_file" in value_after(argv, "-hls_flags").split("+")
    pattern = value_after(argv, "-hls_segment_filename")
    assert pattern == f"{ROOT}/lobby/lobby_{STAMP}_%06d.ts"
    assert Path(pattern).parent == ROOT / "lobby"
    assert argv[-1] == f"{ROOT}/lobby/index.m3u8"
    assert argv.index("-f") > argv.index("-i")  # output options follow the input


def test_segment_duration_is_formatted_plainly():
    argv = build_argv(stream(recording=RecordingConfig(segment_duration=2.5)), launch())
    assert value_after(argv, "-hls_time") == "2.5"


def test_no_recording_decodes_to_null():
    argv = build_argv(stream(recording=RecordingConfig(enabled=False)), launch())
    assert argv[-3:] == ["-f", "null", "-"]
    assert "hls" not in argv and "-hls_segment_filename" not in argv


TARGET = RtpTarget("127.0.0.1", 40000, 1234, 96)


def test_recording_and_rtp_are_independent_slaves_of_one_tee():
    argv = build_argv(stream(), launch(), rtp=TARGET)
    assert value_after(argv, "-f") == "tee"
    hls, rtp = argv[-1].split("|")
    assert hls.startswith("[f=hls:") and "onfail=ignore]" in hls and hls.endswith(f"{ROOT}/lobby/index.m3u8")
    assert rtp == ("[select=v:f=rtp:ssrc=1234:payload_type=96:rtpflags=skip_rtcp:packetsize=1200:onfail=ignore]"
                   "rtp\\://127.0.0.1\\:40000")


def test_rtp_alone_replaces_the_null_output_without_recording():
    argv = build_argv(stream(recording=RecordingConfig(enabled=False)), launch(), rtp=TARGET)
    assert argv[-11:] == ["-f", "rtp", "-ssrc", "1234", "-payload_type", "96", "-rtpflags", "skip_rtcp",
                          "-packetsize", "1200", "rtp://127.0.0.1:40000"]
    assert "null" not in argv and "tee" not in argv


def test_every_run_of_a_producer_sends_from_its_source_port():
    """comedia locks the transport to the first sender's port: FFmpeg binds the producer's own."""
    pinned = RtpTarget("127.0.0.1", 40000, 1234, 96, source_port=41234)
    assert pinned.url == "rtp://127.0.0.1:40000?localrtpport=41234"
    assert build_argv(stream(recording=RecordingConfig(enabled=False)), launch(), rtp=pinned)[-1] == pinned.url
    assert build_argv(stream(), launch(), rtp=pinned)[-1].endswith("]rtp\\://127.0.0.1\\:40000?localrtpport\\=41234")
    verbatim = stream(command=("ffmpeg", "-i", "{url}", "-f", "rtp", "{rtp_url}"))
    assert build_argv(verbatim, launch(), rtp=pinned)[-1] == pinned.url


def test_a_run_starts_its_rtp_sequence_where_it_is_told():
    """Both output shapes carry the first sequence number (agent/supervise/rtp_source.py next_seq)."""
    alone = build_argv(stream(recording=RecordingConfig(enabled=False)), launch(), rtp=TARGET, rtp_seq=8200)
    assert value_after(alone, "-seq") == "8200"
    tee = build_argv(stream(), launch(), rtp=TARGET, rtp_seq=8200)
    assert ":seq=8200:onfail=ignore]" in tee[-1].split("|")[1]


def test_tee_paths_are_escaped_for_both_levels():
    argv = build_argv(stream(), Launch(Path("/rec/a:b"), STAMP), rtp=TARGET)
    assert "hls_segment_filename=/rec/a\\\\\\:b/" in argv[-1]  # unescaped twice
    assert "]/rec/a\\:b/index.m3u8|" in argv[-1]                  # unescaped once


def test_verbatim_rtp_placeholders():
    s = stream(command=("ffmpeg", "-i", "{url}", "-f", "rtp", "-ssrc", "{ssrc}", "-payload_type",
                        "{payload_type}", "{rtp_url}", "{rtp_host}:{rtp_port}"))
    assert build_argv(s, launch(), rtp=RtpTarget("::1", 5004, 7, 100))[-6:] == [
        "-ssrc", "7", "-payload_type", "100", "rtp://[::1]:5004", "::1:5004"]


def test_restarts_never_reuse_segment_names():
    first, second = launch(start_stamp(1_700_000_000_000)), launch(start_stamp(1_700_000_000_001))
    a = value_after(build_argv(stream(), first), "-hls_segment_filename")
    b = value_after(build_argv(stream(), second), "-hls_segment_filename")
    assert a != b
    assert first.playlist == second.playlist  # the live playlist is per stream, not per run


def test_argv_is_pure():
    assert build_argv(stream(), launch()) == build_argv(stream(), launch())


# -- verbatim mode ----------------------------------------------------------------

def test_verbatim_command_fills_every_placeholder():
    command = ("ffmpeg", "-rtsp_transport", "{rtsp_transport}", "-i", "{url}",
               "-progress", "{progress}", "-f", "hls", "-hls_time", "{segment_duration}",
               "-hls_segment_filename", "{segment_pattern}", "-metadata", "title={stream_id}",
               "-hls_base_url", "{recording_dir}/", "{playlist}")
    s = stream(command=command, rtsp_transport="udp", recording=RecordingConfig(segment_duration=4))
    assert build_argv(s, launch(), ffmpeg="/ignored/ffmpeg") == [
        "ffmpeg", "-rtsp_transport", "udp", "-i", URL,
        "-progress", "pipe:1", "-f", "hls", "-hls_time", "4",
        "-hls_segment_filename", f"{ROOT}/lobby/lobby_{STAMP}_%06d.ts", "-metadata", "title=lobby",
        "-hls_base_url", f"{ROOT}/lobby/", f"{ROOT}/lobby/index.m3u8"]


def test_verbatim_command_keeps_literal_braces_and_percent():
    s = stream(url=None, command=("ffmpeg", "-progress", "{progress}", "-vf", "drawtext=text='{{x}}'",
                                  "-f", "segment", "out_%03d.ts"))
    assert build_argv(s, launch()) == ["ffmpeg", "-progress", "pipe:1", "-vf", "drawtext=text='{x}'",
                                       "-f", "segment", "out_%03d.ts"]


def test_verbatim_values_are_not_formatted_again():
    s = stream(url="rtsp://cam/{stream_id}", command=("ffmpeg", "-progress", "{progress}", "-i", "{url}"))
    assert build_argv(s, launch())[-1] == "rtsp://cam/{stream_id}"


# -- start stamps ------------------------------------------------------------------

@pytest.mark.parametrize(("epoch_ms", "stamp"), [
    (0, "19700101T000000000Z"),
    (1_700_000_000_123, "20231114T221320123Z"),
    (1_795_530_373_007, "20261124T142613007Z"),
])
def test_start_stamp_format(epoch_ms, stamp):
    assert start_stamp(epoch_ms) == stamp


def test_start_stamps_sort_like_time():
    times = [0, 999, 1000, 59_999, 60_000, 1_700_000_000_000, 1_700_000_000_001, 4_102_444_800_000]
    stamps = [start_stamp(t) for t in times]
    assert sorted(stamps) == stamps
    assert len(set(stamps)) == len(stamps)
    assert all(s.isalnum() for s in stamps)  # safe in file names


# -- the -progress parser ---------------------------------------------------------

BLOCK = (b"frame=250\n"
         b"fps=25.00\n"
         b"stream_0_0_q=-1.0\n"
         b"bitrate= 512.3kbits/s\n"
         b"total_size=640000\n"
         b"out_time_us=10000000\n"
         b"out_time_ms=10000000\n"
         b"out_time=00:00:10.000000\n"
         b"dup_frames=0\n"
         b"drop_frames=0\n"
         b"speed=1.00x\n"
         b"progress=continue\n")
EXPECTED = Progress(frame=250, fps=25.0, total_size=640000, out_time_us=10_000_000, ended=False)


def test_one_block_gives_one_report():
    assert ProgressParser().feed(BLOCK) == [EXPECTED]


@pytest.mark.parametrize("cut", range(len(BLOCK) + 1))
def test_a_block_split_anywhere_gives_the_same_report(cut):
    parser = ProgressParser()
    reports = parser.feed(BLOCK[:cut]) + parser.feed(BLOCK[cut:])
    assert reports == [EXPECTED]


def test_a_block_fed_byte_by_byte():
    parser = ProgressParser()
    reports = [r for i in range(len(BLOCK)) for r in parser.feed(BLOCK[i:i + 1])]
    assert reports == [EXPECTED]


def test_consecutive_blocks_do_not_leak_fields():
    parser = ProgressParser()
    second = b"frame=300\nprogress=continue\n"
    assert parser.feed(BLOCK + second) == [EXPECTED, Progress(frame=300)]


def test_crlf_line_endings():
    assert ProgressParser().feed(BLOCK.replace(b"\n", b"\r\n")) == [EXPECTED]


def test_not_available_values_read_as_zero():
    block = (b"frame=0\nfps=0.00\nbitrate=N/A\ntotal_size=N/A\nout_time_us=N/A\n"
             b"out_time_ms=N/A\nout_time=N/A\nspeed=N/A\nprogress=continue\n")
    assert ProgressParser().feed(block) == [Progress()]


def test_out_time_ms_is_a_fallback_for_out_time_us():
    # FFmpeg's out_time_ms is (mis)named: it is microseconds too.
    assert ProgressParser().feed(b"out_time_ms=4000000\nprogress=continue\n") == [
        Progress(out_time_us=4_000_000)]


def test_progress_end_marks_the_report_ended():
    block = BLOCK.replace(b"progress=continue", b"progress=end")
    [report] = ProgressParser().feed(block)
    assert report.ended and report.frame == 250


def test_junk_and_partial_lines_are_ignored_until_complete():
    parser = ProgressParser()
    assert parser.feed(b"[hls @ 0x5] Opening 'x.ts' for writing\n\nframe=1") == []
    assert parser.feed(b"0\nprogress=cont") == []
    assert parser.feed(b"inue\n") == [Progress(frame=10)]


def test_progress_parser_memory_is_bounded_for_newline_free_junk():
    parser, junk = ProgressParser(), b"x" * 65536
    started = time.process_time()
    for _ in range(300):
        assert parser.feed(junk) == []
    assert len(parser._partial) <= PROGRESS_LINE_MAX  # was 19.6 MB
    assert time.process_time() - started < 1.0
    # Still parses once real reports come again.
    [report] = parser.feed(b"\nframe=5\nprogress=continue\n")
    assert report.frame == 5


def test_progress_parser_bounds_unknown_keys_and_nan():
    parser = ProgressParser()
    parser.feed(b"".join(b"k%d=v\n" % i for i in range(10_000)))
    assert parser._fields == {}
    [report] = parser.feed(b"fps=nan\nframe=3\nprogress=continue\n")
    assert report.fps == 0.0 and report.frame == 3


def test_advanced_from_nothing():
    assert not Progress().advanced_from(None)
    assert Progress(frame=1).advanced_from(None)
    assert Progress(total_size=1).advanced_from(None)
    assert Progress(out_time_us=1).advanced_from(None)
    assert not Progress(fps=25.0).advanced_from(None)  # a rate is not media


def test_advanced_from_an_earlier_report():
    before = Progress(frame=100, fps=25.0, total_size=5000, out_time_us=4_000_000)
    assert not before.advanced_from(before)
    assert not Progress(frame=100, fps=0.0, total_size=5000, out_time_us=4_000_000).advanced_from(before)
    assert Progress(frame=101, total_size=5000, out_time_us=4_000_000).advanced_from(before)
    assert Progress(frame=100, total_size=5001, out_time_us=4_000_000).advanced_from(before)
    assert Progress(frame=100, total_size=5000, out_time_us=4_000_001).advanced_from(before)
    assert not Progress(frame=10, total_size=500, out_time_us=1).advanced_from(before)
