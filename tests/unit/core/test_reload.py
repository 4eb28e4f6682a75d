"""Reload planning: which streams start, restart, stop or keep their process."""
from __future__ import annotations

from pathlib import Path

from agent.config.loader import load
from agent.config.model import Config
from agent.reload import ReloadPlan, plan_reload

ENV = {"PW": "hunter22"}
BASE_STREAMS = {
    "cam1": "url: rtsp://admin:${PW}@10.0.0.1/s",
    "cam2": "url: rtsp://admin:${PW}@10.0.0.2/s",
    "cam3": "url: rtsp://admin:${PW}@10.0.0.3/s",
}


def load_text(tmp_path: Path, name: str, streams: dict[str, str], *, node: str = "",
              extra: str = "", root: str = "rec", env: dict[str, str] = ENV) -> Config:
    lines = ["version: 1", "recordings:", f"  root: {root}"]
    if node:
        lines += ["node:"] + [f"  {line}" for line in node.splitlines()]
    if extra:
        lines += extra.splitlines()
    lines.append("streams:" if streams else "streams: {}")
    for sid, body in streams.items():
        lines.append(f"  {sid}:")
        lines += [f"    {line}" for line in body.splitlines()]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return load(path, env)


def plan(tmp_path: Path, old: dict[str, str], new: dict[str, str], **kw) -> ReloadPlan:
    old_kw = {k[4:]: v for k, v in kw.items() if k.startswith("old_")}
    new_kw = {k[4:]: v for k, v in kw.items() if k.startswith("new_")}
    return plan_reload(load_text(tmp_path, "old.yaml", old, **old_kw),
                       load_text(tmp_path, "new.yaml", new, **new_kw))


def changed(sid: str, extra: str, streams: dict[str, str] = BASE_STREAMS) -> dict[str, str]:
    return {**streams, sid: streams[sid] + "\n" + extra}


def buckets(p: ReloadPlan) -> dict[str, tuple[str, ...]]:
    return {k: v for k, v in (("start", p.start), ("restart", p.restart), ("stop", p.stop),
                              ("remove", p.remove), ("update", p.update),
                              ("unchanged", p.unchanged)) if v}


# -- one change at a time ---------------------------------------------------------

def test_identical_files_change_nothing(tmp_path):
    p = plan(tmp_path, BASE_STREAMS, BASE_STREAMS)
    assert buckets(p) == {"unchanged": ("cam1", "cam2", "cam3")}
    assert p.needs_restart == ()
    assert p.summary() == "unchanged: 3"


def test_url_change_restarts_only_that_stream(tmp_path):
    new = {**BASE_STREAMS, "cam2": "url: rtsp://admin:${PW}@10.0.0.22/s"}
    assert buckets(plan(tmp_path, BASE_STREAMS, new)) == {"restart": ("cam2",),
                                                         "unchanged": ("cam1", "cam3")}


def test_removed_stream_is_removed(tmp_path):
    new = {k: v for k, v in BASE_STREAMS.items() if k != "cam3"}
    assert buckets(plan(tmp_path, BASE_STREAMS, new)) == {"remove": ("cam3",),
                                                         "unchanged": ("cam1", "cam2")}


def test_new_stream_is_started(tmp_path):
    new = {**BASE_STREAMS, "cam4": "url: rtsp://10.0.0.4/s"}
    assert buckets(plan(tmp_path, BASE_STREAMS, new)) == {"start": ("cam4",),
                                                         "unchanged": ("cam1", "cam2", "cam3")}


def test_disabling_stops(tmp_path):
    p = plan(tmp_path, BASE_STREAMS, changed("cam1", "enabled: false"))
    assert buckets(p) == {"stop": ("cam1",), "unchanged": ("cam2", "cam3")}


def test_enabling_starts(tmp_path):
    p = plan(tmp_path, changed("cam1", "enabled: false"), BASE_STREAMS)
    assert buckets(p) == {"start": ("cam1",), "unchanged": ("cam2", "cam3")}


def test_disabled_stream_left_disabled_is_unchanged(tmp_path):
    old = changed("cam1", "enabled: false")
    assert buckets(plan(tmp_path, old, old)) == {"unchanged": ("cam1", "cam2", "cam3")}


def test_removing_a_disabled_stream_removes_it(tmp_path):
    old = changed("cam1", "enabled: false")
    new = {k: v for k, v in BASE_STREAMS.items() if k != "cam1"}
    assert buckets(plan(tmp_path, old, new)) == {"remove": ("cam1",), "unchanged": ("cam2", "cam3")}


def test_a_new_disabled_stream_is_listed_as_stopped(tmp_path):
    # "update" and "unchanged" are for streams the agent already has; a stream that
    # is new in the file must land where the agent creates it (it stays listed, stopped).
    new = {**BASE_STREAMS, "cam4": "url: rtsp://10.0.0.4/s\nenabled: false"}
    p = plan(tmp_path, BASE_STREAMS, new)
    assert buckets(p) == {"stop": ("cam4",), "unchanged": ("cam1", "cam2", "cam3")}


def test_settings_outside_the_process_update_without_restart(tmp_path):
    for extra in ("recording:\n  retention: 30d", "name: Front door",
                  "restart:\n  max_delay: 5m\n  multiplier: 3\n  jitter: 0.5",
                  "stall_timeout: 45s", "stop_timeout: 3s"):
        p = plan(tmp_path, BASE_STREAMS, changed("cam2", extra))
        assert buckets(p) == {"update": ("cam2",), "unchanged": ("cam1", "cam3")}, extra
        assert p.config.streams["cam2"] != p.config.streams["cam1"]


def test_settings_that_shape_the_process_restart(tmp_path):
    for extra in ("recording:\n  segment_duration: 4s", "recording:\n  enabled: false",
                  "rtsp_transport: udp", "input_args: [-fflags, nobuffer]"):
        p = plan(tmp_path, BASE_STREAMS, changed("cam2", extra))
        assert buckets(p) == {"restart": ("cam2",), "unchanged": ("cam1", "cam3")}, extra


def test_defaults_changes_reach_every_stream(tmp_path):
    p = plan(tmp_path, BASE_STREAMS, BASE_STREAMS,
             new_extra="defaults:\n  recording:\n    segment_duration: 6s")
    assert buckets(p) == {"restart": ("cam1", "cam2", "cam3")}


def test_ffmpeg_binary_change_restarts_every_running_stream(tmp_path):
    old = changed("cam3", "enabled: false")
    p = plan(tmp_path, old, old, old_node="ffmpeg: /usr/bin/ffmpeg",
             new_node="ffmpeg: /opt/ffmpeg7/bin/ffmpeg")
    assert buckets(p) == {"restart": ("cam1", "cam2"), "unchanged": ("cam3",)}
    assert p.needs_restart == ()


def test_recordings_root_change_restarts_recording_streams(tmp_path):
    old = changed("cam3", "recording:\n  enabled: false")
    p = plan(tmp_path, old, old, new_root="elsewhere")
    assert buckets(p) == {"restart": ("cam1", "cam2"), "unchanged": ("cam3",)}


def test_runtime_dir_change_needs_an_agent_restart_and_keeps_the_old_dir(tmp_path):
    p = plan(tmp_path, BASE_STREAMS, BASE_STREAMS, old_node="runtime_dir: /run/vas",
             new_node="runtime_dir: /run/vas2\nffmpeg: /usr/local/bin/ffmpeg")
    assert p.needs_restart == ("node.runtime_dir",)
    assert p.config.node.runtime_dir == Path("/run/vas")
    assert p.config.node.ffmpeg == "/usr/local/bin/ffmpeg"  # the rest is adopted
    assert p.restart == ("cam1", "cam2", "cam3")
    assert p.summary() == "restarted: cam1, cam2, cam3; unchanged: 0; needs agent restart: node.runtime_dir"


def test_the_plan_adopts_the_new_config(tmp_path):
    new_cfg = load_text(tmp_path, "new.yaml", changed("cam1", "name: Hall"))
    p = plan_reload(load_text(tmp_path, "old.yaml", BASE_STREAMS), new_cfg)
    assert p.config == new_cfg


def test_secret_file_content_change_restarts(tmp_path):
    secret = tmp_path / "cam1.pw"
    streams = {**BASE_STREAMS, "cam1": f"url: rtsp://admin:${{file:{secret}}}@10.0.0.1/s"}
    secret.write_text("old-password\n")
    old = load_text(tmp_path, "old.yaml", streams)
    secret.write_text("new-password\n")
    new = load_text(tmp_path, "new.yaml", streams)
    p = plan_reload(old, new)
    assert buckets(p) == {"restart": ("cam1",), "unchanged": ("cam2", "cam3")}
    assert new.secrets == frozenset({"hunter22", "new-password"})
    # Same file, same content: the process is kept.
    assert buckets(plan_reload(new, load_text(tmp_path, "again.yaml", streams))) == {
        "unchanged": ("cam1", "cam2", "cam3")}


def test_environment_change_restarts(tmp_path):
    old = load_text(tmp_path, "old.yaml", BASE_STREAMS)
    new = load_text(tmp_path, "new.yaml", BASE_STREAMS, env={"PW": "changed!"})
    assert plan_reload(old, new).restart == ("cam1", "cam2", "cam3")


# -- the summary ------------------------------------------------------------------

def test_summary_of_a_mixed_reload(tmp_path):
    unchanged = {f"cam{i}": f"url: rtsp://10.0.0.{i}/s" for i in range(5, 17)}
    old = {"cam1": "url: rtsp://10.0.0.1/s", "cam2": "url: rtsp://10.0.0.2/s", **unchanged}
    new = {"cam2": "url: rtsp://10.0.0.22/s", "cam4": "url: rtsp://10.0.0.4/s", **unchanged}
    p = plan(tmp_path, old, new)
    assert p.summary() == "started: cam4; restarted: cam2; stopped: cam1; unchanged: 12"


def test_summary_lists_stops_removals_and_updates(tmp_path):
    old = {**BASE_STREAMS, "cam4": "url: rtsp://10.0.0.4/s"}
    new = {"cam1": BASE_STREAMS["cam1"] + "\nenabled: false", "cam2": BASE_STREAMS["cam2"],
           "cam3": BASE_STREAMS["cam3"] + "\nname: Yard"}
    p = plan(tmp_path, old, new)
    assert buckets(p) == {"stop": ("cam1",), "remove": ("cam4",), "update": ("cam3",),
                          "unchanged": ("cam2",)}
    assert p.summary() == "stopped: cam1, cam4; updated: cam3; unchanged: 1"


def test_summary_never_shows_passwords(tmp_path):
    new = {**BASE_STREAMS, "cam2": "url: rtsp://admin:${PW}@10.0.0.22/s"}
    assert "hunter22" not in plan(tmp_path, BASE_STREAMS, new).summary()


def test_a_new_recordings_root_moves_streams_and_asks_for_a_restart_for_retention():
    import dataclasses
    from pathlib import Path

    from agent.config.model import Config, NodeConfig, StreamConfig
    from agent.reload import plan_reload
    streams = {"a": StreamConfig(id="a", url="rtsp://h/")}
    old = Config(path=Path("/x.yaml"), sha256="1", node=NodeConfig(), recordings_root=Path("/rec"), streams=streams)
    plan = plan_reload(old, dataclasses.replace(old, recordings_root=Path("/elsewhere")))
    assert plan.restart == ("a",) and plan.needs_restart == ("recordings.root (retention)",)
