"""The ``recordings:`` keys and a stream's retention and size cap: their errors, and a reload
that changes them keeps the process."""
from __future__ import annotations


def _load(tmp_path, text: str):
    path = tmp_path / "streams.yaml"
    path.write_text(text)
    from agent.config.loader import load
    return load(path)


def test_retention_keys_and_their_errors(tmp_path):
    import pytest

    from agent.config import model as C
    cfg = _load(tmp_path, "version: 1\nrecordings: {min_free: 20GiB, min_free_hysteresis: 2%, sweep_interval: 5m,"
                          " probe_interval: 10s, orphan_retention: 0}\ndefaults: {recording: {max_size: 50GiB}}\n"
                          "streams: {a: {url: 'rtsp://h/', recording: {max_size: null}}, b: {url: 'rtsp://h/'}}\n")
    assert cfg.recordings == C.RecordingsConfig(sweep_interval=300.0, probe_interval=10.0,
                                                min_free=C.SpaceAmount(bytes=20 << 30),
                                                min_free_hysteresis=C.SpaceAmount(percent=2.0), orphan_retention=0.0)
    assert cfg.streams["a"].recording.max_size == 0 and cfg.streams["b"].recording.max_size == 50 << 30
    with pytest.raises(C.ConfigError) as err:
        _load(tmp_path, "version: 1\nrecordings:\n  min_free: 95%\nstreams:\n  a:\n    url: 'rtsp://h/'\n"
                        "    recording: {max_size: 0}\n")
    assert f"{tmp_path / 'streams.yaml'}:3: recordings.min_free: expected a percentage" in str(err.value)
    assert "'95%'" in str(err.value)
    assert f"{tmp_path / 'streams.yaml'}:7: streams.a.recording.max_size: expected a size like 50GiB" in str(err.value)
    for probe, said in (("500ms", "must be at least 1s, got '500ms'"), ("2h", "must be at most 1h, got '2h'"),
                        ("0", "must be greater than 0, got 0")):
        with pytest.raises(C.ConfigError) as err:
            _load(tmp_path, f"version: 1\nrecordings:\n  probe_interval: {probe}\nstreams: {{a: {{url: 'rtsp://h/'}}}}\n")
        assert f"{tmp_path / 'streams.yaml'}:3: recordings.probe_interval: {said}" in str(err.value), str(err.value)


def test_a_changed_retention_or_cap_keeps_the_process(tmp_path):
    from agent.reload import plan_reload
    old = _load(tmp_path, "version: 1\nstreams: {a: {url: 'rtsp://h/'}}\n")
    new = _load(tmp_path, "version: 1\nrecordings: {min_free: 1GiB}\n"
                          "streams: {a: {url: 'rtsp://h/', recording: {retention: 1d, max_size: 1GiB}}}\n")
    plan = plan_reload(old, new)
    assert plan.update == ("a",) and plan.restart == ()
