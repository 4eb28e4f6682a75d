"""Control a real GStreamer RTSP test camera (tests/camera/rtsp_camera.py) from pytest.

The camera script needs the GStreamer GObject bindings, which only the system
interpreter can import, so it always runs as a separate ``/usr/bin/python3`` process.

    with RtspCamera(paths=["cam1"]) as cam:
        url = cam.url("cam1")            # rtsp://127.0.0.1:<port>/cam1
        cam.restart()                    # same port, fresh process
"""
from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).with_name("rtsp_camera.py")
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
EXIT_BIND_FAILED = 3  # rtsp_camera.py: could not bind the port
BIND_RETRY_FOR = 10.0  # how long start() keeps retrying a port that is still in use


class CameraError(RuntimeError):
    """The camera process did not come up."""


#: Each test process hands out ports from its own block below the kernel's ephemeral range
#: (32768-60999): a port the kernel picked for port 0 was taken by another worker's etcd or by an
#: outgoing connection before the child that was meant to bind it did.
PORT_BLOCK = 1000
#: Blocks between 10000 and the ephemeral range: enough for a run's workers (``-n auto`` takes
#: at most BLOCKS - 2, tests/conftest.py) and a second run or a bench beside it on a small host.
BLOCKS = 22
#: A process holds its block with an flock on one of these for as long as it lives, so two runs at
#: once (two suites, a suite beside a soak or a bench) never hand out the same port: with blocks
#: chosen by xdist worker name alone, gw4 of one run and gw4 of another started SFUs on the same
#: port, and one agent adopted, then closed, the other's producer.
BLOCK_LOCK = "/tmp/vas-test-ports.{}.lock"
#: Where in its block this process starts: when all blocks are held, processes share one, and a
#: camera restarted on its port lost it to another process that began at the block's first port.
_handed = itertools.count(os.getpid() % PORT_BLOCK)
_held: list[int] = []  # [block index, lock fd] once claimed


def _block() -> range:
    if not _held:
        _held.extend(_claim_block())
    low = 10000 + _held[0] * PORT_BLOCK
    return range(low, low + PORT_BLOCK)


def _claim_block() -> tuple[int, int]:
    """``(index, fd)``: the first block no live process holds, from the xdist worker's own; when all
    are held, the worker's own, shared (fd -1)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    first = int(worker[2:]) + 1 if worker[:2] == "gw" and worker[2:].isdigit() else 0
    for index in [(first + i) % BLOCKS for i in range(BLOCKS)]:
        fd = os.open(BLOCK_LOCK.format(index), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return index, fd  # held until this process exits
    return first % BLOCKS, -1


def free_port() -> int:
    """A TCP port on 127.0.0.1, free now, that no other test process hands out."""
    block = _block()
    for _ in range(len(block)):
        port = block[next(_handed) % len(block)]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # held by something else: the next one
            return port
    raise RuntimeError(f"no free port in {block.start}-{block.stop - 1}")


class RtspCamera:
    """A live H.264 RTSP server on 127.0.0.1 serving ``paths`` (one shared pipeline each)."""

    def __init__(
        self,
        paths: Iterable[str] = ("cam1",),
        port: int | None = None,
        *,
        user: str | None = None,
        password: str | None = None,
        fps: int = 25,
        size: str = "320x240",
        profile: str | None = None,
        background: str | None = None,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        if (user is None) != (password is None):
            raise ValueError("user and password must be given together")
        self.paths = [p.strip("/") for p in paths]
        if not self.paths:
            raise ValueError("at least one path is required")
        self._auto_port = port is None  # may move to another port until first start
        self.port = port if port is not None else free_port()
        self.user, self.password = user, password
        self.fps, self.size = fps, size
        self.profile = profile  # the H.264 profile x264 must encode (None: its own choice)
        self.background = background  # the ball's background, 0xAARRGGBB (None: black)
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.starts = 0  # number of successful start() calls
        self._logdir = tempfile.TemporaryDirectory(prefix="rtsp-camera-")
        self._stdout_path = Path(self._logdir.name, "stdout.log")
        self._stderr_path = Path(self._logdir.name, "stderr.log")

    # ----------------------------------------------------------------- API
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def base_url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}"

    def url(self, path: str = "cam1", user: str | None = None, password: str | None = None) -> str:
        """RTSP URL of ``path``; credentials (if given) are percent-encoded into it."""
        auth = ""
        if user is not None:
            auth = quote(user, safe="")
            if password is not None:
                auth += ":" + quote(password, safe="")
            auth += "@"
        return f"rtsp://{auth}127.0.0.1:{self.port}/{path.strip('/')}"

    def stderr_text(self) -> str:
        """Everything the camera process wrote to stderr (GStreamer warnings etc.)."""
        try:
            return self._stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> RtspCamera:
        """Launch the camera and block until it prints READY (port is listening)."""
        if self.running:
            raise CameraError(f"camera already running (pid {self.proc.pid if self.proc else '?'})")
        deadline = time.monotonic() + BIND_RETRY_FOR
        while True:
            rc = self._launch_and_wait_ready()
            if rc is None:
                self.starts += 1
                return self
            if (rc == EXIT_BIND_FAILED and self._auto_port and self.starts == 0
                    and time.monotonic() < deadline):
                self.port = free_port()  # lost the race for a "free" port: pick another
                continue
            if rc == EXIT_BIND_FAILED and time.monotonic() < deadline:
                time.sleep(0.2)  # port still held by someone else; retry
                continue
            raise CameraError(
                f"RTSP camera on port {self.port} exited with code {rc} before READY.\n"
                f"command: {' '.join(self._command())}\n"
                f"stderr:\n{self.stderr_text() or '<empty>'}"
            )

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 5 s. Idempotent; returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        return proc.returncode

    def restart(self) -> RtspCamera:
        """Stop and start again on the SAME port (clients see the server go away)."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """stop() and delete the log directory (the object cannot be started again)."""
        self.stop()
        self._logdir.cleanup()

    def __enter__(self) -> RtspCamera:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.proc.pid}" if self.running and self.proc else "stopped"
        return f"<RtspCamera {self.base_url} paths={self.paths} {state}>"

    # ----------------------------------------------------------- internals
    def _command(self) -> list[str]:
        cmd = [SYSTEM_PYTHON, str(SCRIPT), "--port", str(self.port),
               "--fps", str(self.fps), "--size", self.size]
        for p in self.paths:
            cmd += ["--path", p]
        if self.profile:
            cmd += ["--profile", self.profile]
        if self.background:
            cmd += ["--background", self.background]
        if self.user is not None:
            cmd += ["--user", self.user, "--password", self.password or ""]
        return cmd

    def _launch_and_wait_ready(self) -> int | None:
        """Start the process; None once READY, else its exit code (killed on timeout)."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONSTARTUP")}
        # Files, not pipes: nobody has to keep draining them while tests run.
        with open(self._stdout_path, "wb") as out, open(self._stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, env=env, close_fds=True)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if b"READY " in self._stdout_path.read_bytes():
                return None
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                return rc
            time.sleep(0.05)
        self.stop()
        raise CameraError(
            f"RTSP camera on port {self.port} printed no READY line within "
            f"{self.ready_timeout:.0f} s.\ncommand: {' '.join(self._command())}\n"
            f"stderr:\n{self.stderr_text() or '<empty>'}"
        )


#: The paths of the camera lent to tests (``lend_camera``).
LENT_PATHS = ("cam1", "cam2", "cam3", "cam4")
#: The frame rate of the suite's cameras (a common surveillance rate; a test that needs another
#: asks for it).  Encoding is most of a camera's CPU, and the suite is CPU-bound on 2 cores: at
#: 25 fps a watched camera cost 3.5 % of a core, at 10 fps 1.4 %.  Keyframes stay 1 s apart.
SUITE_FPS = 10


class LentCamera(RtspCamera):
    """A camera lent to one test at a time (``rtsp_camera``): it counts the test's stops."""

    stops = 0

    def stop(self) -> int | None:
        self.stops += 1
        return super().stop()


@contextlib.contextmanager
def lend_camera(cameras: dict[tuple[str | None, str | None], LentCamera], user: str | None = None,
                password: str | None = None) -> Iterator[LentCamera]:
    """This worker's camera serving cam1..cam4 (with these credentials), shared by the tests one
    after another: a camera starts in about half a second of CPU, and most tests only read from it.
    One that a test stopped, restarted or closed is replaced afterwards, so every test gets a
    camera that has run untouched since its start (``starts == 1``)."""
    key = (user, password)
    cam = cameras.get(key)
    if cam is None or cam.stops or not cam.running:
        if cam is not None:
            cam.close()
        cam = cameras[key] = LentCamera(LENT_PATHS, user=user, password=password, fps=SUITE_FPS)
        cam.start()
    yield cam
    if cam.stops or not cam.running:  # touched by the test: not lent again
        del cameras[key]
        cam.close()
