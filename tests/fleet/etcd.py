"""A real etcd (Debian's etcd-server) on loopback for the fleet tests: one member or three."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from camera.fixture import free_port

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
#: Where the members keep their data: a tmpfs, where etcd's fsync of every write costs nothing.  On
#: the disk that the suite's other workers fill with recordings, a put waited for the disk longer
#: than the agent's 2 s etcd timeout (fsync is what etcd waits for, not the CPU).
DATA_PARENT = "/dev/shm" if Path("/dev/shm").is_dir() else None


class EtcdMember:
    """One etcd process; ``kill()`` and ``start()`` again keep its data and ports."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name, self.workdir = name, workdir
        self.client_port, self.peer_port = free_port(), free_port()
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"vas-test-etcd-{name}-", dir=DATA_PARENT or workdir))
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.cluster = ""  # set by EtcdCluster
        self.extra_ports: list[int] = []  # more client ports (tests firewall one agent's)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def client_urls(self) -> list[str]:
        return [self.url] + [f"http://127.0.0.1:{p}" for p in self.extra_ports]

    def start(self, state: str = "new") -> EtcdMember:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
             "--listen-client-urls", ",".join(self.client_urls()), "--advertise-client-urls", self.url,
             "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
             "--initial-cluster", self.cluster or f"{self.name}={self.peer_url}",
             "--initial-cluster-state", state, "--initial-cluster-token", "vas-test",
             "--heartbeat-interval", "100", "--election-timeout", "1000", "--log-level", "warn"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self

    def status(self) -> dict:
        req = urllib.request.Request(self.url + "/v3/maintenance/status", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=2) as resp:
            return json.loads(resp.read())

    def healthy(self) -> bool:
        try:
            return bool(self.status().get("leader"))
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class EtcdCluster:
    """``size`` members on loopback; ``endpoints`` for clients."""

    def __init__(self, workdir: Path, size: int = 1, extra_client_ports: int = 0) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.members = [EtcdMember(f"m{i}", workdir) for i in range(size)]
        for m in self.members:
            m.extra_ports = [free_port() for _ in range(extra_client_ports)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.cluster = initial

    @property
    def endpoints(self) -> list[str]:
        return [m.url for m in self.members]

    def start(self, timeout: float = 30) -> EtcdCluster:
        if not Path(ETCD).exists():
            raise RuntimeError(f"{ETCD} not found: the fleet tests need a real etcd (./install.sh --dev installs "
                               "etcd-server)")
        for m in self.members:
            m.start()
        deadline = time.monotonic() + timeout
        while not all(m.healthy() for m in self.members):
            if time.monotonic() > deadline:
                raise RuntimeError("etcd did not become healthy:\n" + "\n".join(m.log()[-2000:] for m in self.members))
            time.sleep(0.1)
        return self

    def leader(self) -> EtcdMember:
        for m in self.members:
            if m.proc and m.proc.poll() is None:
                try:
                    status = m.status()
                except OSError:
                    continue
                if status["leader"] == status["header"]["member_id"]:
                    return m
        raise RuntimeError("no etcd leader")

    def close(self) -> None:
        for m in self.members:
            m.kill()
            shutil.rmtree(m.data_dir, ignore_errors=True)
