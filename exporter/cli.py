"""``vas-exporter --config FILE [--check]``: serve health, the /v2 API and metrics."""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys

from agent.version import VersionAction, build

DEFAULT_CONFIG = "/etc/vas/streams.yaml"
log = logging.getLogger("vas.exporter")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vas-exporter",
                                     description="Health JSON, the /v2 API and metrics of this node.")
    parser.add_argument("--version", action=VersionAction)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"streams file (default {DEFAULT_CONFIG})")
    parser.add_argument("--check", action="store_true", help="validate the exporter: section and exit")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    from agent.config.exporter import SettingsError, load
    try:
        settings = load(args.config)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 1
    from .eventloop import LoopError, chosen, loop_factory
    try:
        loop = chosen()
    except LoopError as exc:  # --check (ExecStartPre) too: the service must not start to die
        print(f"vas-exporter: {exc}", file=sys.stderr)
        return 1
    if args.check:
        print(f"ok: {args.config}: listen {settings.host}:{settings.port}"
              f"{' (https: ' + str(settings.tls_cert) + ')' if settings.tls_cert else ''}, "
              f"snapshot {settings.snapshot_path}, tokens {settings.tokens_file}, "
              f"reads {'need a read token' if settings.require_read_token else 'open'}")
        _warn_about_tokens(settings.tokens_file)
        return 0
    _setup_logging(args.log_level)
    factory = loop_factory(loop)
    build()  # now, from the code this process loaded: an upgrade in place later must not rename it
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(_serve(args.config, settings))
    except OSError as exc:  # e.g. the port is taken
        log.error("cannot serve on %s:%d: %s", settings.host, settings.port, exc.strerror or exc)
        return 1
    return 0


def _warn_about_tokens(path) -> None:
    """Problems of the tokens file, as warnings: they never stop the exporter (read routes and
    health must keep answering), so ``--check`` (ExecStartPre) must not fail on them either."""
    from agent.tokens import load
    loaded = load(path)
    for problem in loaded.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if loaded.refused:
        print("warning: the exporter will start, and its mutating routes answer 503 until this is fixed",
              file=sys.stderr)


#: Seconds an idle or incomplete client connection is kept.
IDLE_TIMEOUT = 15.0


def _setup_logging(level: str) -> None:
    from agent.redact import LOG_FILTER
    fmt = "%(levelname)s %(message)s" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(LOG_FILTER)


async def _serve(config: str, settings) -> None:
    from aiohttp import web

    from agent.config.exporter import SettingsError, load
    from agent.httplog import quiet_protocol_errors
    from agent.supervise.limits import raise_nofile_limit

    from .app import CONTEXT, create_app
    from .connections import ConnectionCap, limit_for, quiet_accept_errors

    quiet_protocol_errors()  # scanners and broken clients: one debug line each, not a traceback
    soft, _ = raise_nofile_limit()  # thousands of idle clients must not starve the load balancer's checks
    app = create_app(settings)
    # A connection that sends nothing (or dribbles a request) is closed after this long.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=IDLE_TIMEOUT)
    await runner.setup()
    assert runner.server is not None
    loop = asyncio.get_running_loop()
    ConnectionCap(runner.server, limit_for(soft))  # the load balancer's check always finds a descriptor
    quiet_accept_errors(loop)
    tls = settings.ssl_context()  # checked by load(): a broken pair never gets this far
    await web.TCPSite(runner, settings.host, settings.port, reuse_address=True, ssl_context=tls).start()
    # What start-up built (modules, the app, the first snapshot) lives as long as the process:
    # frozen out of the collector's way, a full collection walks only what new snapshots make
    # (500 streams, measured in-process: 10-23 ms -> ~1 ms), and it is those that land on a scrape.
    gc.collect()
    gc.freeze()
    log.info("serving %s on %s:%d (snapshot %s; up to %d descriptors; %s's event loop)", "https" if tls else "http",
             settings.host, settings.port, settings.snapshot_path, soft, type(loop).__module__.partition(".")[0])
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:  # SIGHUP: the tokens (the listen address needs a restart)
        try:
            _reload()
        except Exception:  # a bug must not leave half a reload unsaid (asyncio would log it without context)
            log.exception("reload failed part-way; some settings may be old: restart vas-exporter")

    def _reload() -> None:
        try:
            new = load(config)
        except SettingsError as exc:
            log.error("reload refused, keeping the running settings:\n%s", exc)
            return
        if (new.host, new.port) != (settings.host, settings.port):
            log.warning("exporter.listen changed: restart vas-exporter to apply it")
        if (new.tls_cert is None) != (tls is None):
            log.warning("exporter.tls turned on or off: restart vas-exporter to apply it")
        elif tls is not None and new.tls_cert and new.tls_key:
            try:  # a renewed certificate: new handshakes use it, open connections keep theirs
                tls.load_cert_chain(new.tls_cert, new.tls_key)
                log.info("reloaded the TLS certificate %s", new.tls_cert)
            except (OSError, ValueError) as exc:
                log.error("cannot load the renewed certificate (%s); still serving the previous one", exc)
        app[CONTEXT].apply(new)  # type: ignore[attr-defined]
        log.info("reloaded settings and tokens")

    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    await runner.cleanup()
