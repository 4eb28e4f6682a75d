"""The control socket, the runtime_dir and the tokens file are reachable only by root and
group vas: the agent runs as user vas (as systemd/vas-agent.service does), and real
processes running as other users are refused."""
from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import BIN, CHEAP, AgentProcess, config

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MEMBER, OUTSIDER = "vastest-member", "vastest-outsider"


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def accounts(host_vas_account) -> Iterator[dict[str, pwd.struct_passwd]]:
    """User vas and group vas (as install.sh creates them), a member of vas and an outsider."""
    for name, groups in ((MEMBER, ["-G", "vas"]), (OUTSIDER, [])):
        subprocess.run(["userdel", name], capture_output=True)
        _run("useradd", "--system", "-M", "-s", "/usr/sbin/nologin", *groups, name)
    try:
        yield {n: pwd.getpwnam(n) for n in ("vas", MEMBER, OUTSIDER)}
    finally:
        for name in (MEMBER, OUTSIDER):
            subprocess.run(["userdel", name], capture_output=True)


def as_user(user: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv],
                          capture_output=True, text=True, timeout=60)


def connect_as(user: str, path: Path) -> str:
    code = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect(sys.argv[1]); print('ok')\n"
            "except OSError as e: print(e.strerror)")
    return as_user(user, "/usr/bin/python3", "-c", code, str(path)).stdout.strip()


def test_only_root_and_group_vas_reach_the_socket_and_the_tokens(accounts):
    base = Path(tempfile.mkdtemp(prefix="vas-perm-"))
    os.chmod(base, 0o755)  # like /: anyone may pass; what matters is below
    try:
        work = base / "node"
        work.mkdir()
        agent = AgentProcess(work, config({"cam1": CHEAP}))
        vas = accounts["vas"]
        # As systemd does: RuntimeDirectory=vas with RuntimeDirectoryMode=0750, User=vas, UMask=0027.
        agent.runtime_dir.mkdir(mode=0o750)
        agent.recordings.mkdir()
        for path in (agent.runtime_dir, agent.recordings, work):
            os.chown(path, vas.pw_uid, vas.pw_gid)
        os.chmod(agent.config_path, 0o644)
        agent.start(prefix=("setpriv", "--reuid=vas", "--regid=vas", "--init-groups"))
        try:
            agent.wait_state("cam1", "live", timeout=30)
            sock = agent.runtime_dir / "agent.sock"
            st = sock.stat()
            assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == vas.pw_gid, oct(st.st_mode)
            assert stat.S_IMODE(agent.runtime_dir.stat().st_mode) == 0o750
            # state.json holds no secrets (0644); the 0750 runtime_dir is what keeps others out.
            assert stat.S_IMODE((agent.runtime_dir / "state.json").stat().st_mode) == 0o644

            assert connect_as(MEMBER, sock) == "ok"
            assert connect_as(OUTSIDER, sock) == "Permission denied"
            member = as_user(MEMBER, str(BIN / "vasctl"), "--socket", str(sock), "status")
            assert member.returncode == 0 and "cam1" in member.stdout, member.stderr
            assert as_user(MEMBER, str(BIN / "vasctl"), "--socket", str(sock), "reload").returncode == 0
            for args in (("status",), ("reload",), ("restart", "cam1")):
                out = as_user(OUTSIDER, str(BIN / "vasctl"), "--socket", str(sock), *args)
                assert out.returncode == 1, (args, out.stdout, out.stderr)
                assert "permission denied" in out.stderr and "group vas" in out.stderr, out.stderr
                assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
            root = subprocess.run([str(BIN / "vasctl"), "--socket", str(sock), "status"], capture_output=True,
                                  text=True)
            assert root.returncode == 0

            # The tokens file, as install.sh makes it (root:vas 0640) and vasctl keeps it.
            tokens = base / "tokens"
            subprocess.run(["install", "-m", "0640", "-o", "root", "-g", "vas", "/dev/null", str(tokens)], check=True)
            subprocess.run([str(BIN / "vasctl"), "token", "--tokens-file", str(tokens), "add", "ops", "--scope",
                            "admin"], check=True, capture_output=True)
            st = tokens.stat()
            assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == 0 and st.st_gid == vas.pw_gid
            read = "import sys\ntry: open(sys.argv[1]).read(); print('ok')\nexcept OSError as e: print(e.strerror)"
            assert as_user(MEMBER, "/usr/bin/python3", "-c", read, str(tokens)).stdout.strip() == "ok"
            assert as_user(OUTSIDER, "/usr/bin/python3", "-c", read, str(tokens)).stdout.strip() == "Permission denied"
        finally:
            agent.stop()
            agent.kill()
    finally:
        shutil.rmtree(base, ignore_errors=True)

