"""Entry points: ``vas-agent`` and ``vasctl`` (argument parsing only)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from agent.version import VersionAction

# Heavy modules (asyncio, aiohttp, yaml, psutil) are imported where used:
# `systemctl reload` runs vasctl, and its start-up time is the operator's wait.

DEFAULT_CONFIG = "/etc/vas/streams.yaml"
#: The last log line names this many of the calls still stuck at exit.
STUCK_NAMED = 10


def agent_main(argv: list[str] | None = None) -> int:
    """``vas-agent --config FILE [--check]``."""
    parser = argparse.ArgumentParser(prog="vas-agent", description="Keep this host's cameras streaming and recording.")
    parser.add_argument("--version", action=VersionAction)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"streams file (default {DEFAULT_CONFIG})")
    parser.add_argument("--check", action="store_true", help="validate the file, print errors, start nothing")
    parser.add_argument("--user", help="with --check: open the file and its ${file:} secrets as this user "
                        "(default when root checks /etc/vas/streams.yaml: vas, the unit's User=)")
    parser.add_argument("--environment-file", help="with --check: NAME=value lines for ${NAME}, as the unit's "
                        "EnvironmentFile= (default for /etc/vas/streams.yaml: /etc/vas/environment)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    from agent.config import loader
    from agent.config import model as config
    from agent.supervise.limits import limit_malloc_arenas

    limit_malloc_arenas()  # first: no thread has allocated yet
    if args.check:
        return _check(args)
    try:
        cfg = loader.load(args.config)
    except config.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    _setup_logging(args.log_level)
    from agent.version import build
    build()  # now, from the code this process loaded: an upgrade in place later must not rename it
    import asyncio
    code = asyncio.run(_run_agent(cfg))
    _report_stuck()
    return code


def _report_stuck() -> None:
    """One line at exit naming the calls still stuck (a hung mount): their daemon threads die with
    the process, nobody waits for them (agent/blocking.py)."""
    from collections import Counter

    from agent.blocking import stuck
    calls = Counter(stuck())
    if calls:
        named = [f"{name} x{n}" if n > 1 else name for name, n in sorted(calls.items())]
        more = f" and {len(named) - STUCK_NAMED} more" if len(named) > STUCK_NAMED else ""
        logging.getLogger("vas.agent").warning(
            "exiting with %d calls still stuck (a hung mount?), not waited for: %s%s",
            sum(calls.values()), ", ".join(named[:STUCK_NAMED]), more)


def _check(args) -> int:
    """``--check``: the file as the service will load it (its environment file, its user)."""
    from agent import service_check
    from agent.config import loader
    from agent.config import model as config
    service = service_check.is_service_config(args.config)
    env, env_note = dict(os.environ), None
    env_file = args.environment_file or (service_check.ENVIRONMENT_FILE if service else None)
    if env_file:
        env, env_note = service_check.environment(Path(env_file), explicit=bool(args.environment_file))
    try:
        cfg = loader.load(args.config, env)
    except config.ConfigError as exc:
        print(exc, file=sys.stderr)
        if env_note:  # it explains a "not set" above: the variables it would have given are missing
            print(f"note: {env_note}", file=sys.stderr)
        return 1
    errors = service_check.access_errors(args.config, args.user or service_check.default_user(service))
    for line in errors + ([f"note: {env_note}"] if env_note else []):
        print(line, file=sys.stderr)
    if errors:
        return 1
    _report_ok(args.config, cfg)
    return 0


def _report_ok(path: str, cfg) -> None:
    """Warnings and notes about a valid file, then its ``ok:`` line."""
    enabled = sum(s.enabled for s in cfg.streams.values())
    from agent.recordings.disk import check_floors
    floors = check_floors(cfg.recordings, str(cfg.recordings_root), cfg.streams)
    for warning in _missing_programs(cfg) + _fd_limit(enabled) + floors:
        print(f"warning: {warning}", file=sys.stderr)
    for note in _verbatim_notes(cfg):
        print(f"note: {note}", file=sys.stderr)
    print(f"ok: {path}: {len(cfg.streams)} streams ({enabled} enabled)")


def _missing_programs(cfg) -> list[str]:
    """Programs the streams would run that are not on this host (valid file, broken host)."""
    import shutil

    wanted = {cfg.node.ffmpeg: "node.ffmpeg"} if any(s.command is None for s in cfg.streams.values()) else {}
    for s in cfg.streams.values():
        if s.command:
            wanted.setdefault(s.command[0], f"streams.{s.id}.command")
    return [f"{key}: {prog!r} not found; streams using it will fail to start"
            for prog, key in wanted.items() if shutil.which(prog) is None]


def _verbatim_notes(cfg) -> list[str]:
    """How the agent will watch verbatim commands it cannot read progress from or feed the SFU with."""
    notes = []
    for s in cfg.streams.values():
        if s.command is None:
            continue
        if not s.reports_progress:
            watch = ("stalls by recording growth (no new file for stall_timeout)"
                     if s.recording.enabled and s.stall_timeout else "no stall detection")
            notes.append(f"streams.{s.id}.command: no {{progress}}: ready after {s.ready_after:g}s up "
                         f"or a new recording file; {watch}")
        if cfg.mediasoup is not None and not s.sends_rtp:
            notes.append(f"streams.{s.id}.command: no {{rtp_url}} (or other RTP placeholder): "
                         "no SFU producer; live on ingest alone")
    return notes


def _fd_limit(enabled: int) -> list[str]:
    """The descriptor budget as the agent will have it (it raises soft to hard at start)."""
    import resource

    from agent.supervise.limits import fd_warning
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    warning = fd_warning(enabled, hard if hard != resource.RLIM_INFINITY else 1 << 30)
    return [warning] if warning else []


async def _run_agent(cfg) -> int:
    import asyncio

    from agent.agent import Agent
    from agent.blocking import DaemonExecutor
    from agent.interface import AlreadyRunning
    # asyncio.run joins its default executor's threads at the end, with no timeout: on daemon threads
    # instead, one call stuck on a hung mount (asyncio.to_thread anywhere) cannot hold up the exit.
    asyncio.get_running_loop().set_default_executor(DaemonExecutor())
    agent = Agent(cfg)
    try:
        await agent.run()
    except AlreadyRunning as exc:
        logging.getLogger("vas.agent").error("%s", exc)
        return 1
    except OSError as exc:  # e.g. runtime_dir not writable, socket path too long
        logging.getLogger("vas.agent").error("cannot start: %s%s", exc, runtime_dir_hint(exc, cfg.node.runtime_dir))
        return 1
    return 0


def runtime_dir_hint(exc: OSError, runtime_dir: Path) -> str:
    """What to do when the runtime_dir cannot be made or written (pure): under systemd the unit's
    RuntimeDirectory= creates it; started by hand (a container, LXC) nobody does."""
    if not isinstance(exc, PermissionError) or not str(exc.filename or "").startswith(str(runtime_dir)):
        return ""
    return (f"; {runtime_dir} (node.runtime_dir) must exist and be writable by this user (uid {os.geteuid()}): "
            "the systemd unit's RuntimeDirectory=vas creates /run/vas; started by hand or in a container, "
            f"create it first: install -d -o vas -g vas -m 0750 {runtime_dir} (docs/operations.md, Without systemd)")


def _setup_logging(level: str) -> None:
    from agent.redact import LOG_FILTER
    # Under systemd the journal stamps each line already.
    fmt = "%(levelname)s %(message)s" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # no record leaves unredacted
        handler.addFilter(LOG_FILTER)


def _interval(text: str) -> float:
    value = float(text)
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds from 0.1 to 3600, got {text}")
    return value


def vasctl_main(argv: list[str] | None = None) -> int:
    """``vasctl [--config FILE | --socket PATH] status|reload|restart|cleanup``; a closed pipe
    (``vasctl status --json | head``) ends it quietly, as it ends any Unix tool."""
    try:
        code = _vasctl(argv)
        sys.stdout.flush()  # inside the try: a pipe closed early fails here, not at exit
        return code
    except BrokenPipeError:
        # Python would print a second error flushing stdout at exit: point it at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13  # what a shell shows for a tool killed by SIGPIPE


def _vasctl(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="vasctl", description="Operate the VAS node agent.")
    parser.add_argument("--version", action=VersionAction)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"streams file (default {DEFAULT_CONFIG})")
    parser.add_argument("--socket", help="control socket (default: {runtime_dir}/agent.sock from the config)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    st = sub.add_parser("status", help="every stream's state, uptime, restarts, fps, CPU, RSS, last error")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--watch", nargs="?", const=2.0, type=_interval, metavar="SECONDS",
                    help="redraw the table in place every SECONDS (default 2) until Ctrl-C")
    sub.add_parser("reload", help="re-read the config and apply only what changed; waits for the outcome")
    rs = sub.add_parser("restart", help="restart one stream now")
    rs.add_argument("stream")
    cl = sub.add_parser("cleanup", help="delete recordings older than their retention now")
    cl.add_argument("stream", nargs="?", help="only this stream (default: all)")
    cl.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    cl.add_argument("--retention-days", metavar="DAYS", help="delete what is older than this instead")
    cl.add_argument("--json", action="store_true",
                    help="the result as JSON (the shape of the VAS-MS-V2 health API's cleanup)")
    fl = sub.add_parser("fleet", help="fleet mode: nodes and stream owners, as this node sees etcd")
    fls = fl.add_subparsers(dest="fleet_command", required=True, metavar="status")
    fst = fls.add_parser("status", help="nodes (alive, ready, owned/capacity) and each stream's owner and epoch")
    fst.add_argument("--json", action="store_true", help="machine-readable output")
    tk = sub.add_parser("token", help="bearer tokens for the exporter's changes "
                                      "(and its reads with exporter.require_read_token)")
    tk.add_argument("--tokens-file", help="default: exporter.tokens_file of --config, else /etc/vas/tokens")
    tks = tk.add_subparsers(dest="token_command", required=True, metavar="add|list|remove")
    ta = tks.add_parser("add", help="create a token, print it once, store only its hash")
    ta.add_argument("name")
    from agent.tokens import SCOPES
    ta.add_argument("--scope", required=True, choices=list(SCOPES),
                    help="heartbeat: viewers' heartbeats; read: /v2/health reads (exporter.require_read_token); "
                         "viewer: the console's video (live, recordings, snapshots, clips); admin: everything")
    tks.add_parser("list", help="names and scopes (never the tokens)")
    tr = tks.add_parser("remove", help="revoke a token")
    tr.add_argument("name")
    args = parser.parse_args(argv)
    if args.command == "token":
        return _token(args)

    from agent import snapshot, vasctl

    try:
        if args.socket:
            runtime = Path(args.socket).parent
        else:
            from agent.config.loader import runtime_dir_for_vasctl
            runtime, note = runtime_dir_for_vasctl(args.config)
            if note:
                print(f"vasctl: {note}", file=sys.stderr)
    except ValueError as exc:
        print(f"vasctl: {exc}", file=sys.stderr)
        return 1
    sock = Path(args.socket) if args.socket else runtime / snapshot.SOCKET_NAME
    if args.command == "status" and args.watch is not None:
        if args.json:
            parser.error("--watch redraws the table; for JSON, run status --json repeatedly")
        return vasctl.watch(runtime, args.watch)
    if args.command == "status":
        return vasctl.status(runtime, as_json=args.json)
    if args.command == "fleet":
        return vasctl.fleet_status(runtime, as_json=args.json)
    if args.command == "reload":
        return vasctl.reload(sock)
    if args.command == "cleanup":
        return _cleanup(vasctl, sock, args)
    return vasctl.restart(sock, args.stream)


def _cleanup(vasctl, sock: Path, args) -> int:
    """``vasctl cleanup``: ``--retention-days`` is checked like the API's parameter (a plain ASCII
    decimal, one hour to 100 years); a bad one exits 1 with nothing deleted."""
    from agent.config.cleanup import BadParameter, parse_days
    days = None
    if args.retention_days is not None:
        try:
            days = parse_days(args.retention_days)
        except BadParameter as exc:
            print(f"vasctl: {str(exc).replace('retention_days', '--retention-days', 1)}", file=sys.stderr)
            return 1
    return vasctl.cleanup(sock, args.stream, dry_run=args.dry_run, retention_days=days, as_json=args.json)


def _token(args) -> int:
    """``vasctl token add|list|remove``: the tokens file holds only SHA-256 hashes."""
    from agent import tokens
    path = Path(args.tokens_file) if args.tokens_file else _tokens_file_of(args.config)
    try:
        if args.token_command == "add":
            token = tokens.add(path, args.name, args.scope)
            # vas-exporter re-reads the file when it changes (checked on every request): no reload needed.
            print(f"token {args.name} ({args.scope}) added to {path}; vas-exporter accepts it from its next "
                  f"request on (Authorization: Bearer <token>); it is shown only now:\n{token}")
        elif args.token_command == "remove":
            tokens.remove(path, args.name)
            print(f"token {args.name} removed from {path}; vas-exporter refuses it from its next request on")
        else:
            return _token_list(path)
    except (tokens.TokenError, OSError) as exc:
        print(f"vasctl: {exc}", file=sys.stderr)
        return 1
    return 0


def _token_list(path: Path) -> int:
    """Names and scopes of the tokens the exporter accepts; each problem on stderr (exit 1)."""
    from agent import tokens
    loaded = tokens.load(path)
    for t in loaded.tokens:
        print(f"{t.name}\t{t.scope}")
    for problem in loaded.problems:
        print(f"vasctl: {problem}", file=sys.stderr)
    return 1 if loaded.problems else 0


def _tokens_file_of(config: str) -> Path:
    try:
        from agent.config.exporter import SettingsError, load
        return load(config).tokens_file
    except (ImportError, SettingsError):
        return Path("/etc/vas/tokens")
