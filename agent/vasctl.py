"""vasctl commands: status from the snapshot, everything else over the control socket.

Exit codes: 0 ok, 1 refused/failed/agent down, 2 usage.
"""
from __future__ import annotations

import io
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from agent import snapshot, usage
from agent.client import AgentUnreachable, request
from agent.snapshot_view import mark_stale, shape_error

RELOAD_BUSY_WAIT = 60.0
#: Seconds the agent has to start a restart or cleanup; after that it drops the request unread.
START_WITHIN = 3.0
#: Seconds a started restart or cleanup may take before vasctl stops waiting.
WORK_TIMEOUT = 60.0
#: How long an old-looking snapshot is watched for the agent's next touch (every second).
TOUCH_WATCH = 2.5


def watch(runtime_dir: Path, interval: float, out: TextIO = sys.stdout) -> int:
    """``status --watch``: redraw the table in place every ``interval`` s until Ctrl-C (exit 0)."""
    previous: usage.Sample | None = None
    clear = "\033[H\033[J" if out.isatty() else "\f\n"  # a pipe or file gets one frame after another
    # Started from a script's background job (`cmd &`), SIGINT arrives ignored and Python then
    # leaves it so: "Ctrl-C quits" must hold wherever the watch was started from.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while True:
            frame = io.StringIO()
            code, previous = _status(runtime_dir, as_json=False, out=frame, previous=previous)
            out.write(clear + time.strftime("%H:%M:%S") + f"  every {interval:g}s  (Ctrl-C quits)\n"
                      + frame.getvalue())
            out.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0


def status(runtime_dir: Path, *, as_json: bool, out: TextIO = sys.stdout) -> int:
    """Print every stream's state; exit 1 when the agent is down or hung."""
    return _status(runtime_dir, as_json=as_json, out=out)[0]


def _status(runtime_dir: Path, *, as_json: bool, out: TextIO,
            previous: usage.Sample | None = None) -> tuple[int, usage.Sample | None]:
    """One frame of status; also this frame's CPU figures (for the next frame of --watch)."""
    try:
        data, age = snapshot.read(runtime_dir / snapshot.SNAPSHOT_NAME)
    except snapshot.SnapshotUnavailable as exc:
        print(f"vasctl: {exc}", file=sys.stderr)
        return 1, None
    problem = shape_error(data)
    if problem:
        print(f"vasctl: agent state unreadable: {runtime_dir / snapshot.SNAPSHOT_NAME}: {problem}", file=sys.stderr)
        return 1, None
    age = _judged(runtime_dir / snapshot.SNAPSHOT_NAME, age)
    alive = age <= snapshot.STALE_AFTER and data["agent"].get("status") != "stopped"
    if age > snapshot.STALE_AFTER:  # the agent's last word, not the present: every state unknown
        data = mark_stale(data, age)
    data["agent"].update(alive=alive, snapshot_age_seconds=round(age, 3))
    figures = usage.add_usage(data["streams"], previous)
    if as_json:
        json.dump(data, out, indent=2)
        out.write("\n")
    else:
        _print_table(data, out)
    if not alive:
        print(f"vasctl: agent is not running or not responding (snapshot {age:.0f}s old, "
              f"status {data['agent'].get('status')})", file=sys.stderr)
    return (0 if alive else 1), figures


def fleet_status(runtime_dir: Path, *, as_json: bool, out: TextIO = sys.stdout) -> int:
    """Nodes and owners from the agent's cache of etcd; exit 1 when it is stale, cut off or not in a fleet."""
    try:
        data, age = snapshot.read(runtime_dir / snapshot.SNAPSHOT_NAME)
    except snapshot.SnapshotUnavailable as exc:
        print(f"vasctl: {exc}", file=sys.stderr)
        return 1
    fleet = data.get("fleet")
    if fleet is None:
        print("vasctl: this agent is not in a fleet (no cluster: section)", file=sys.stderr)
        return 1
    age = _judged(runtime_dir / snapshot.SNAPSHOT_NAME, age)
    fresh = age <= snapshot.STALE_AFTER and data["agent"].get("status") != "stopped"
    if as_json:
        json.dump({**fleet, "snapshot_age_seconds": round(age, 3)}, out, indent=2)
        out.write("\n")
    else:
        out.write(f"node {fleet['node']}: etcd {'up' if fleet['etcd_up'] else 'DOWN'}, "
                  f"owns {len(fleet['owned'])}" + (f", kept without a key {len(fleet['kept_without_key'])}"
                                                   if fleet["kept_without_key"] else "")
                  + (", FENCED after a freeze: starting nothing until etcd answers" if fleet.get("fenced") else "")
                  + "\n\n")
        nodes = [["NODE", "READY", "OWNED/CAPACITY", "URL"]]
        nodes += [[name, "yes" if n["ready"] else "no", f"{n['owned']}/{n['capacity']}", n.get("url") or "-"]
                  for name, n in fleet["nodes"].items()]
        _columns(nodes, out)
        out.write("\n")
        streams = [["STREAM", "OWNER", "EPOCH"]]
        streams += [[sid, o["node"], str(o["epoch"])] for sid, o in fleet["owners"].items()]
        unowned = sorted(set(fleet.get("streams", [])) - set(fleet["owners"]))
        streams += [[sid, "-", "-"] for sid in unowned]
        _columns(streams, out)
    if not fresh or not fleet["etcd_up"]:
        print("vasctl: " + ("agent is not running or not responding" if not fresh
                            else f"cut off from etcd: {fleet.get('last_error') or 'unknown error'}"), file=sys.stderr)
        return 1
    return 0


def _columns(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")


def _print_table(data: dict[str, Any], out: TextIO) -> None:
    now = time.time()
    rows = [("ID", "STATE", "UPTIME", "RESTARTS", "FPS", "CPU", "RSS", "REC", "OLDEST", "LAST ERROR")]
    for s in data["streams"]:
        prog = s.get("progress") or {}
        if s["state"] == "error" and s.get("next_restart_at"):
            uptime = f"retry {max(0, s['next_restart_at'] - now):.0f}s"
        elif s.get("pid_started_at"):
            uptime = _duration(now - s["pid_started_at"])
        else:
            uptime = "-"
        state = f"unknown (was {s['last_known_state']})" if s.get("stale") else s["state"]
        rows.append((
            s["id"], state, uptime, str(s["restarts"]),
            f"{prog['fps']:.1f}" if prog.get("fps") is not None and s.get("pid") else "-",
            f"{s['cpu_percent']:.1f}%" if s.get("cpu_percent") is not None else "-",
            usage.human_bytes(s["rss_bytes"]) if s.get("rss_bytes") else "-",
            *_recording(s.get("recording") or {}, now), _last_error(s)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] + "\n")
    sfu = data.get("sfu")
    if sfu:
        viewers = sum((data.get("consumers") or {}).get("per_stream", {}).values())
        why = f"; last: {sfu['last_exit']['description']}" if sfu.get("last_exit") and sfu["state"] != "up" else ""
        out.write(f"sfu: {sfu['state']} ({sfu['api_url']}, pid {sfu.get('pid') or '-'}, restarts {sfu['restarts']}, "
                  f"viewers {viewers}){why}\n")
    _print_unsafe(data, out)
    reload_info = data["config"].get("last_reload")
    if reload_info and not reload_info.get("ok"):
        out.write("last reload REFUSED: " + "; ".join(reload_info.get("error", [])) + "\n")
    if data["config"].get("needs_restart"):
        out.write("restart vas-agent to apply: " + ", ".join(data["config"]["needs_restart"]) + "\n")
    _print_retention_warnings(data, out)


def _print_unsafe(data: dict[str, Any], out: TextIO) -> None:
    """Root entries retention refuses: a symlinked stream directory is never cleaned."""
    recordings = data.get("recordings") or {}
    for name, reason in (recordings.get("unsafe_directories") or {}).items():
        out.write(f"recordings: {recordings.get('root', '')}/{name}: UNSAFE: {reason} "
                  "(move it under the root or mount the disk there; see the agent's log)\n")


def _recording(rec: dict[str, Any], now: float) -> tuple[str, str]:
    """Recording size and the age of the oldest segment (from retention's index)."""
    if rec.get("unsafe"):
        return "UNSAFE", "-"  # not indexed: a size here would be a lie (explained below the table)
    size = usage.human_bytes(rec["total_bytes"]) if rec.get("total_bytes") is not None else "-"
    oldest = _duration(max(0.0, now - rec["oldest_segment_at"])) if rec.get("oldest_segment_at") else "-"
    return size, oldest


def _last_error(s: dict[str, Any]) -> str:
    text = (s.get("last_error") or [""])[-1]
    if not text and s.get("last_exit") and s["state"] == "error":
        text = s["last_exit"]["description"]
    return text if len(text) <= 80 else text[:77] + "..."


def _print_retention_warnings(data: dict[str, Any], out: TextIO) -> None:
    """The last reload's word on recordings, and floors retention does not enforce."""
    reload_info = data["config"].get("last_reload") or {}
    for line in reload_info.get("warnings", []) if reload_info.get("ok") else []:
        out.write(f"last reload: {line}\n")
    for s in data.get("streams") or []:
        ahead = ((s.get("recording") or {}).get("future_dated") or {}).get("segments")
        if ahead:
            out.write(f"recordings: {s['id']}: {ahead} segments dated in the future: no policy deletes them "
                      "before then (fix the clock; see the agent's log)\n")
    if (data.get("recordings") or {}).get("problem"):  # e.g. a stream folder on a hung mount
        out.write(f"recordings: RETENTION: {data['recordings']['problem']}\n")
    for fs in (data.get("recordings") or {}).get("filesystems") or []:
        if fs.get("floor_unreachable"):
            out.write(f"recordings: min_free + min_free_hysteresis >= the size of {fs['path']} "
                      f"({usage.human_bytes(fs['total_bytes'])}): that floor is not enforced\n")


def _duration(seconds: float) -> str:
    """``45s``, ``12m``, ``3h05m``, ``2d04h``: short enough for a table column."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def reload(socket_path: Path) -> int:
    """Ask the agent to reload and wait for the outcome (waits out a reload in progress).

    Like any change: nothing is sent to a stopped or hung agent, and one that does not
    start it within START_WITHIN drops it, so a failure here means "not applied".
    """
    deadline = time.monotonic() + RELOAD_BUSY_WAIT
    while True:
        code, body = _change(socket_path, "POST", "/reload")
        if code != 409 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if code == 200:
        print(f"reloaded: {body['summary']}")
        for line in body.get("warnings", []):
            print(f"warning: {line}", file=sys.stderr)
        return 0
    print(f"vasctl: reload refused: {body.get('error')}", file=sys.stderr)
    for line in body.get("details", []):
        print(f"  {line}", file=sys.stderr)
    return 1


def restart(socket_path: Path, stream_id: str) -> int:
    """Restart one stream now."""
    code, body = _change(socket_path, "POST", f"/streams/{stream_id}/restart")
    if code == 200:
        print(f"restarted: {stream_id} (pid {body.get('pid')})")
        return 0
    print(f"vasctl: {body.get('error')}", file=sys.stderr)
    return 1


def cleanup(socket_path: Path, stream_id: str | None, *, dry_run: bool, retention_days: float | None = None,
            as_json: bool = False) -> int:
    """Apply recording retention now and report what went (or would go); exit 1 when refused."""
    from urllib.parse import quote

    from agent.config.cleanup import BadParameter, check_days
    try:
        if retention_days is not None:
            check_days(retention_days)
    except BadParameter as exc:
        print(f"vasctl: {str(exc).replace('retention_days', '--retention-days', 1)}", file=sys.stderr)
        return 1
    query = "&".join(q for q in (f"stream={quote(stream_id, safe='')}" if stream_id else "",
                                 "dry_run=1" if dry_run else "",
                                 f"retention_days={retention_days!r}" if retention_days is not None else "") if q)
    code, body = _change(socket_path, "POST", "/recordings/cleanup" + (f"?{query}" if query else ""))
    if code != 200:
        print(f"vasctl: {body.get('error')}", file=sys.stderr)
        return 1
    if as_json:
        json.dump(body["streams"][stream_id] if stream_id else body, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    verb = "would delete" if dry_run else "deleted"
    for sid, r in body["streams"].items():
        note = f"; {r['errors']} could not be deleted" if r.get("errors") else ""
        note += f"; refused: {r['refused']}" if r.get("refused") else ""
        print(f"{sid}: {verb} {r['deleted_count']} segments ({usage.human_bytes(r['deleted_bytes'])}){note}")
    return 0


def _call(socket_path: Path, method: str, path: str) -> tuple[int, dict[str, Any]]:
    try:
        return request(str(socket_path), method, path)
    except AgentUnreachable as exc:
        print(f"vasctl: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _change(socket_path: Path, method: str, path: str) -> tuple[int, dict[str, Any]]:
    """A change the agent must start within START_WITHIN or drop; exit 1 "not applied" otherwise.

    Nothing is sent to an agent whose snapshot is stale (stopped or hung).  While
    waiting, a snapshot that goes stale after the start window ends the wait: the
    agent will drop the request when it reads it, so "not applied" stays true.
    """
    import threading

    from agent.client import start_by
    state = socket_path.parent / snapshot.SNAPSHOT_NAME
    try:
        state.stat()
    except PermissionError:
        _not_applied(f"permission denied on {state}: run as root or as a member of group vas")
    except OSError:
        _not_applied(f"cannot reach vas-agent: no snapshot at {state}; is it running?")
    if not _fresh(state):
        _not_applied("the agent is not running or not responding (stale snapshot): nothing was sent")
    result: dict[str, Any] = {}
    headers = start_by(START_WITHIN)

    def send() -> None:
        try:
            result["answer"] = request(str(socket_path), method, path, timeout=WORK_TIMEOUT, headers=headers)
        except AgentUnreachable as exc:
            result["error"] = exc
    worker = threading.Thread(target=send, name="vasctl-call", daemon=True)
    worker.start()
    started = time.monotonic()
    while worker.is_alive():
        worker.join(0.5)
        if worker.is_alive() and time.monotonic() - started > START_WITHIN and not _fresh(state):
            _not_applied("the agent stopped responding before it started this; it will drop it")
    if "error" in result:
        _not_applied(str(result["error"]))
    return result["answer"]


def _fresh(state: Path) -> bool:
    """The agent proves it is alive: a recent snapshot, or (after a wall-clock step ages lie)
    one it touches while we watch (it does every second)."""
    first = _mtime(state)
    if first is None:
        return False
    if -snapshot.FUTURE_SLACK <= time.time() - first / 1e9 <= snapshot.STALE_AFTER:
        return True
    return _untouched(state, first, TOUCH_WATCH) is None


def _judged(state: Path, age: float) -> float:
    """``age`` of a snapshot, or, when it is dated ahead of the clock (a backward step since the
    agent's last touch), how long it stayed untouched while watched (0 once the agent touches it)."""
    if age >= -snapshot.FUTURE_SLACK:
        return max(0.0, age)
    first = _mtime(state)
    watched = None if first is None else _untouched(state, first, snapshot.STALE_AFTER + 0.5)
    return 0.0 if watched is None else watched


def _untouched(state: Path, first: int, limit: float) -> float | None:
    """Seconds ``state`` kept mtime ``first`` while watched (up to ``limit``); None once it changed."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        time.sleep(0.2)
        if _mtime(state) != first:
            return None
    return time.monotonic() - started


def _mtime(state: Path) -> int | None:
    try:
        return state.stat().st_mtime_ns
    except OSError:
        return None


def _not_applied(why: str) -> None:
    print(f"vasctl: {why}; not applied", file=sys.stderr)
    raise SystemExit(1)
