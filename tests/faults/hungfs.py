"""A hung file system for tests: a FUSE mount whose server never answers (a stand-in for a
hung NFS server).  Every access below it (a stat, a listing, inotify_add_watch) blocks in
the kernel (``fuse_do_getattr``) until :meth:`HungMount.abort`, which closes the connection:
the blocked calls then fail with ENOTCONN and the mount is detached (files planted in the
directory beneath it reappear).

Needs root and /dev/fuse.  Mount only in a private mount namespace, so that no other test or
process (a ``df``, the soak) meets the mount: run this module as a program under
``unshare -m --propagation private``:

    unshare -m --propagation private python tests/faults/hungfs.py --mount DIR [--mount DIR...] \\
        --log FILE -- COMMAND...

It mounts, starts COMMAND (its output to FILE; in the same namespace, so it sees the mounts),
prints ``pid N``, then reads its stdin: ``mount DIR`` mounts one more (over what DIR holds; prints
``mounted``), ``abort`` aborts every mount (prints ``aborted``); at
EOF it aborts them, gives COMMAND 10 s to exit and kills it.  The mounts are aborted whatever
happens (and the kernel aborts them anyway when this process dies: it holds the connection).
"""
from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


class HungMount:
    """A FUSE mount at ``target`` that no server ever answers; ``abort()`` ends it."""

    def __init__(self, target: str | Path) -> None:
        self.target = str(target)
        os.makedirs(self.target, exist_ok=True)
        self.fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        opts = f"fd={self.fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
        if _libc.mount(b"vas-hung", self.target.encode(), b"fuse", 0, opts) != 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            self.fd = -1
            raise OSError(err, os.strerror(err), self.target)

    def abort(self) -> None:
        """Close the connection (blocked calls fail with ENOTCONN), then detach the mount."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            _libc.umount2(self.target.encode(), MNT_DETACH)


def main(argv: list[str]) -> int:
    """Mount, run the command, abort on ``abort`` or at EOF (see the module's docstring)."""
    parser = argparse.ArgumentParser(prog="hungfs")
    parser.add_argument("--mount", action="append", default=[])
    parser.add_argument("--log", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    mounts: list[HungMount] = []
    child: subprocess.Popen[bytes] | None = None
    try:
        mounts += [HungMount(m) for m in args.mount]
        with open(args.log, "ab") as log:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        print(f"pid {child.pid}", flush=True)
        for line in sys.stdin:
            if line.startswith("mount "):
                mounts.append(HungMount(line[len("mount "):].strip()))
                print("mounted", flush=True)
            elif line.strip() == "abort":
                for m in mounts:
                    m.abort()
                print("aborted", flush=True)
    finally:
        for m in mounts:
            m.abort()
        if child is not None:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
