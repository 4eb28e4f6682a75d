"""The console's pure parts (issue 20): time parameters, playlists, the timeline, clip
choice and limits, the status tiles, the codec probe's parsing and the new setting."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from agent.config.exporter import SettingsError, load
from agent.supervise.video_probe import video_from_probe
from exporter import clips, playlists
from exporter.console_view import console_streams
from exporter.timerange import BadParameter, parse_time, time_range

T0 = 1_795_874_520.0  # 2026-11-28T14:02:00Z


def seg(name: str, start: float, duration: float = 2.0, size: int = 1000, init: str | None = None) -> list:
    return [name, start, duration, size, init]


# -- start and end -----------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["1795874520", "1795874520.0", "2026-11-28T14:02:00Z", "2026-11-28T15:02:00+01:00",
                                  "2026-11-28T14:02:00.000+00:00"])
def test_iso_8601_with_a_zone_and_unix_seconds_name_the_same_moment(text):
    assert parse_time(text, "start") == T0


@pytest.mark.parametrize("text,why", [("2026-11-28T14:02:00", "no time zone"), ("yesterday", "neither"),
                                      ("-1", "neither"), ("1e9", "neither"), ("١٧٦٤٣٣٨٥٢٠", "neither"),
                                      ("100", "outside"), ("", "neither")])
def test_a_bad_time_is_refused_naming_the_parameter(text, why):
    with pytest.raises(BadParameter, match=why) as caught:
        parse_time(text, "end")
    assert caught.value.parameter == "end"


def test_the_range_defaults_to_the_last_24_hours_and_is_checked():
    assert time_range({}, T0) == (T0 - 86400, T0)
    assert time_range({"start": "1795874520", "end": "1795874580"}, T0) == (T0, T0 + 60)
    for query, parameter in (({"start": "1795874580", "end": "1795874520"}, "end"), ({"from": "1"}, "from"),
                             ({"start": "1000000000", "end": "1795874520"}, "end"), ({"end": "1795874520"}, None)):
        if parameter is None:
            with pytest.raises(BadParameter, match="required") as caught:
                time_range(query, T0, required=True)
            assert caught.value.parameter == "start"
            continue
        with pytest.raises(BadParameter) as caught:
            time_range(query, T0)
        assert caught.value.parameter == parameter


# -- playlists -------------------------------------------------------------------------------------
def test_a_vod_playlist_dates_every_segment_and_marks_gaps_and_new_runs():
    segments = [seg("cam1_A_000001.ts", T0), seg("cam1_A_000002.ts", T0 + 2),
                seg("cam1_A_000003.ts", T0 + 30, 2.4),  # a gap
                seg("cam1_B_000000.ts", T0 + 32.4)]  # a restart without a gap: the clock starts again
    text = playlists.vod("cam1", segments)
    lines = text.splitlines()
    assert lines[:4] == ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:3", "#EXT-X-PLAYLIST-TYPE:VOD"]
    assert lines[-1] == "#EXT-X-ENDLIST" and text.count("#EXT-X-DISCONTINUITY") == 2
    assert "#EXT-X-PROGRAM-DATE-TIME:2026-11-28T14:02:00.000Z" in lines
    assert text.count("#EXT-X-PROGRAM-DATE-TIME:") == 4 and "#EXT-X-MAP" not in text
    assert [line for line in lines if not line.startswith("#")][0] == "/v2/recordings/cam1/segments/cam1_A_000001.ts"


def test_a_vod_playlist_of_fmp4_carries_the_map_and_repeats_it_when_the_init_changes():
    segments = [seg("d/a_1.m4s", T0, init="d/init.mp4"), seg("d/a_2.m4s", T0 + 2, init="d/init.mp4"),
                seg("e/b_1.m4s", T0 + 4, init="e/init.mp4")]
    text = playlists.vod("cam 1", segments)
    assert text.count("#EXT-X-MAP:") == 2 and '#EXT-X-MAP:URI="/v2/recordings/cam%201/segments/d/init.mp4"' in text
    assert text.index("#EXT-X-MAP") < text.index("a_1.m4s") and text.count("#EXT-X-DISCONTINUITY") == 1


def test_the_live_playlist_points_only_at_the_stream_and_drops_what_leaves_it():
    live = ("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"init.mp4\"\n"
            "#EXT-X-PROGRAM-DATE-TIME:2026-11-28T14:02:00.000+0000\n#EXTINF:2.0,\ncam1_A_000001.m4s\n"
            "#EXTINF:2.0,\n../other/x.m4s\n#EXTINF:2.0,\n/etc/passwd\n#EXTINF:2.0,\nhttp://evil/x.ts\n"
            "#EXTINF:2.0,\nsub/cam1_A_000002.m4s\n")
    out = playlists.rewrite_live("cam1", live)
    assert '#EXT-X-MAP:URI="/v2/recordings/cam1/segments/init.mp4"' in out
    uris = [line for line in out.splitlines() if not line.startswith("#")]
    assert uris == ["/v2/recordings/cam1/segments/cam1_A_000001.m4s",
                    "/v2/recordings/cam1/segments/sub/cam1_A_000002.m4s"]
    assert out.count("#EXTINF") == 2 and "passwd" not in out and "evil" not in out and "other" not in out


def test_the_timeline_merges_touching_segments_and_lists_the_gaps():
    segments = [seg("a_1.ts", T0), seg("a_2.ts", T0 + 2), seg("a_3.ts", T0 + 10), seg("a_4.ts", T0 + 12.3)]
    ranges, gaps = playlists.timeline(segments, T0 - 5, T0 + 20)
    assert ranges == [[T0, T0 + 4], [T0 + 10, T0 + 14.3]]
    assert gaps == [[T0 - 5, T0], [T0 + 4, T0 + 10], [T0 + 14.3, T0 + 20]]
    assert playlists.timeline([], T0, T0 + 1) == ([], [[T0, T0 + 1]])


@pytest.mark.parametrize("every", [1, 2, 3, 1000])
def test_the_playlist_and_the_timeline_in_pieces_are_the_whole(every):
    segments = [seg("d/a_1.m4s", T0, init="d/init.mp4"), seg("d/a_2.m4s", T0 + 2, init="d/init.mp4"),
                seg("e/b_1.m4s", T0 + 4, 3.2, init="e/init.mp4"), seg("e/b_2.m4s", T0 + 40, init="e/init.mp4"),
                seg("c_000001.ts", T0 + 42), seg("c_000002.ts", T0 + 44)]
    parts = list(playlists.vod_parts("cam1", segments, every))
    pieces = [p for p in parts if p]  # the empty ones are pauses while the longest duration is found
    assert "".join(pieces) == playlists.vod("cam1", segments) and len(pieces) == 6 // every + 1
    assert "#EXT-X-TARGETDURATION:4" in pieces[0] and pieces[-1].endswith("#EXT-X-ENDLIST\n")
    steps = playlists.timeline_steps(segments, T0 - 5, T0 + 50, every)
    paused = 0
    while True:
        try:
            next(steps)
            paused += 1
        except StopIteration as done:
            assert done.value == playlists.timeline(segments, T0 - 5, T0 + 50)
            break
    assert paused == 6 // every


async def test_work_in_turns_lets_the_event_loop_answer_between_pieces():
    import asyncio

    from exporter.turns import in_turns
    seen: list[str] = []

    def work():
        for i in range(3):
            seen.append(f"piece {i}")
            yield
        return "done"

    async def other():
        for _ in range(3):
            seen.append("other")
            await asyncio.sleep(0)
    result, _ = await asyncio.gather(in_turns(work()), other())
    assert result == "done" and seen[:4] == ["piece 0", "other", "piece 1", "other"]


# -- clips ----------------------------------------------------------------------------------------
def test_a_clip_takes_the_segments_whose_middle_is_in_the_range():
    segments = [seg(f"a_{i}.ts", T0 + 2 * i) for i in range(10)]
    chosen = clips.pick(segments, T0 + 3, T0 + 13)
    assert [s[0] for s in chosen] == ["a_1.ts", "a_2.ts", "a_3.ts", "a_4.ts", "a_5.ts"]
    assert [s[0] for s in clips.pick(segments, T0 + 4.2, T0 + 4.4)] == ["a_2.ts"]  # shorter than a segment
    assert clips.pick([], T0, T0 + 1) == []


def test_a_clip_past_the_cap_is_refused_saying_which_setting():
    segments = [seg(f"a_{i}.ts", T0 + 2 * i, size=1 << 20) for i in range(3)]
    assert clips.refusal(segments, 3 << 20) is None
    assert "exporter.clip_max_size" in clips.refusal(segments, (3 << 20) - 1)
    assert "at most" in clips.refusal([seg("a.ts", T0, size=0)] * (clips.MAX_SEGMENTS + 1), 1 << 40)


def test_the_concat_script_names_only_open_descriptors():
    script = clips.concat_script([[5], [6, 7, 8]])
    assert script == "ffconcat version 1.0\nfile 'file:/dev/fd/5'\nfile 'concat:/dev/fd/6|/dev/fd/7|/dev/fd/8'\n"


# -- the status tiles -----------------------------------------------------------------------------
def test_a_tile_shows_codec_bitrate_and_a_last_error_without_the_hosts_paths():
    data = {"config": {"recordings_root": "/srv/rec"}, "consumers": {"per_stream": {"cam1": 2}},
            "streams": []}
    stream = {"id": "cam1", "name": "Gate", "state": "error", "since": T0, "pid_started_at": None, "restarts": 3,
              "progress": {"fps": 25.0, "bytes": 1_000_000, "out_time_seconds": 8.0},
              "video": {"codec": "h264", "width": 1920, "height": 1080},
              "last_error": ["rtsp://admin:***@cam: refused", "/srv/rec/cam1/x.ts: No space left on device"],
              "recording": {"total_bytes": 5, "oldest_segment_at": T0 - 60, "newest_segment_at": T0}}
    view = SimpleNamespace(data=data, streams=[stream], stale=False)
    tile = console_streams(view, T0)["streams"][0]
    assert (tile["codec"], tile["width"], tile["height"], tile["bitrate_kbps"]) == ("h264", 1920, 1080, 1000.0)
    assert tile["last_error"] == "<recordings>/cam1/x.ts: No space left on device" and tile["viewers"] == 2
    assert tile["recording"] == {"bytes": 5, "oldest_at": T0 - 60, "newest_at": T0} and tile["owner"] is None


def test_fleet_mode_names_the_owner_and_its_console():
    fleet = {"node": "a", "owners": {"cam1": {"node": "a"}, "cam9": {"node": "b"}},
             "nodes": {"b": {"url": "http://10.0.0.2:8080"}}}
    view = SimpleNamespace(data={"fleet": fleet}, streams=[{"id": "cam1", "state": "live"}], stale=False)
    doc = console_streams(view, T0)
    assert doc["node"] == {"name": "a", "fleet": True}
    tiles = {t["id"]: t for t in doc["streams"]}
    assert tiles["cam1"]["owner"] is None
    assert tiles["cam9"]["state"] == "elsewhere"
    assert tiles["cam9"]["owner"] == {"node": "b", "console_url": "http://10.0.0.2:8080/"}


# -- the probe's answer and the setting -------------------------------------------------------------
def test_codec_and_resolution_come_from_ffprobes_answer_only():
    good = json.dumps({"streams": [{"codec_name": "hevc", "width": 2560, "height": 1440}]})
    assert video_from_probe(good) == {"codec": "hevc", "width": 2560, "height": 1440}
    assert video_from_probe(json.dumps({"streams": [{"codec_name": "h264", "width": 0}]})) == {
        "codec": "h264", "width": None, "height": None}
    for junk in ("", "{}", "[]", '{"streams": []}', '{"streams": [{"width": 1}]}', "not json"):
        assert video_from_probe(junk) is None


def test_clip_max_size_errors_name_file_line_key_and_value(tmp_path):
    path = tmp_path / "streams.yaml"
    path.write_text("version: 1\nexporter:\n  listen: 127.0.0.1:9\n  clip_max_size: 12 apples\n")
    with pytest.raises(SettingsError) as caught:
        load(path)
    assert caught.value.errors == [f"{path}:4: exporter.clip_max_size: expected a size from 1MiB to 16TiB like "
                                   "2GiB, got '12 apples'"]
    path.write_text("version: 1\nexporter:\n  clip_max_size: 512MiB\n")
    assert load(path).clip_max_bytes == 512 << 20
    path.write_text("version: 1\n")
    assert load(path).clip_max_bytes == 2 << 30
