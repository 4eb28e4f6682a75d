"""fMP4 init segments: an init file goes only with the last segment of its stream that needs it."""
from __future__ import annotations

from agent.recordings.inits import hold_inits, looks_like_init

from .test_disk import seg


def test_init_files_go_only_with_the_last_segment_of_their_stream():
    inits = {"a": {"hdr.mp4"}, "b": set()}
    every = {"a": ["hdr.mp4", "s1.m4s", "s2.m4s"], "b": ["init.mp4", "x1.m4s"], "c": ["c1.ts"]}

    def survivor(sid, goes):
        return any(not goes(r) for r in every[sid])

    plans = [[seg("a", "hdr.mp4", 90), seg("a", "s1.m4s", 80)], [seg("b", "init.mp4", 90)], [seg("c", "c1.ts", 9)]]
    hold_inits(plans, inits=lambda sid: inits.get(sid, set()), survivor=survivor)
    assert [[c.name for c in p] for p in plans] == [["s1.m4s"], [], ["c1.ts"]]
    plans = [[seg("a", "hdr.mp4", 90), seg("a", "s1.m4s", 80)], [seg("a", "s2.m4s", 70)]]
    hold_inits(plans, inits=lambda sid: inits[sid], survivor=survivor)
    assert [[c.name for c in p] for p in plans] == [["hdr.mp4", "s1.m4s"], ["s2.m4s"]]
    assert looks_like_init("cam1_init_0.mp4") and not looks_like_init("clip.mp4") and not looks_like_init("init.m3u8")
