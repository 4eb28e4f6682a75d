"""Reload planning: a pure diff of two configs by each stream's effective settings."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from agent.config.model import Config, StreamConfig, stream_ssrc
from agent.supervise.ffmpeg import Launch, RtpTarget, build_argv


def process_signature(cfg: Config, stream: StreamConfig) -> tuple[str, ...]:
    """Everything that shapes the FFmpeg process: equal signatures keep the process.

    The SFU's address is not known here; a stand-in with the stream's SSRC and
    payload type makes RTP settings (and an SFU appearing or going) count.
    """
    launch = Launch(Path(cfg.recordings_root) / stream.id, "")
    rtp = None
    if cfg.mediasoup is not None and stream.sends_rtp:
        rtp = RtpTarget("sfu", 1, stream_ssrc(stream), stream.rtp.payload_type)
    return tuple(build_argv(stream, launch, ffmpeg=cfg.node.ffmpeg, rtp=rtp))


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload does, stream id by stream id."""

    config: Config  # the config to adopt (node settings that need a restart kept as they were)
    start: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()     # disabled: stopped, stays listed
    remove: tuple[str, ...] = ()   # gone from the file
    update: tuple[str, ...] = ()   # new settings that don't touch the process
    unchanged: tuple[str, ...] = ()
    needs_restart: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        """``started: cam4; restarted: cam2; stopped: cam1; unchanged: 12``."""
        parts = [f"{label}: {', '.join(ids)}" for label, ids in (
            ("started", self.start), ("restarted", self.restart),
            ("stopped", self.stop + self.remove), ("updated", self.update)) if ids]
        parts.append(f"unchanged: {len(self.unchanged)}")
        if self.needs_restart:
            parts.append(f"needs agent restart: {', '.join(self.needs_restart)}")
        return "; ".join(parts)


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Diff ``old`` (running) against ``new`` (validated)."""
    needs_restart: tuple[str, ...] = ()
    if new.node.runtime_dir != old.node.runtime_dir:
        needs_restart += ("node.runtime_dir",)
        new = replace(new, node=replace(new.node, runtime_dir=old.node.runtime_dir))
    if new.recordings_root != old.recordings_root:  # streams move at once; retention's watch needs a restart
        needs_restart += ("recordings.root (retention)",)
    if new.mediasoup != old.mediasoup:  # the SFU and every producer would go: not on a reload
        needs_restart += ("mediasoup",)
        new = replace(new, mediasoup=old.mediasoup)
    if new.cluster != old.cluster:  # a new name, etcd or lease: leave the fleet and join again
        needs_restart += ("cluster",)
        new = replace(new, cluster=old.cluster)
    buckets: dict[str, list[str]] = {k: [] for k in ("start", "restart", "stop", "remove", "update", "unchanged")}
    buckets["remove"] = [sid for sid in old.streams if sid not in new.streams]
    for sid, now in new.streams.items():
        was = old.streams.get(sid)
        buckets[_bucket(old, was, new, now)].append(sid)
    return ReloadPlan(config=new, needs_restart=needs_restart,
                      **{k: tuple(v) for k, v in buckets.items()})


def _bucket(old: Config, was: StreamConfig | None, new: Config, now: StreamConfig) -> str:
    if was is None:
        return "start" if now.enabled else "stop"  # a new disabled stream is listed as stopped
    if not was.enabled:
        return "start" if now.enabled else ("unchanged" if was == now else "update")
    if not now.enabled:
        return "stop"
    same_host = (old.node.ffmpeg, old.recordings_root) == (new.node.ffmpeg, new.recordings_root)
    if same_host and was == now:
        return "unchanged"  # cheap: most streams of a big file, and no argv to build
    if process_signature(old, was) != process_signature(new, now):
        return "restart"
    return "unchanged" if was == now else "update"
