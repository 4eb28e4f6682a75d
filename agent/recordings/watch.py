"""Keeps the index current from inotify (watchdog) events, on watchdog's thread.

A segment appearing (FFmpeg's rename of its ``.tmp``, or a file closed after
writing) is looked up through ``O_NOFOLLOW`` directory fds and indexed; one
moved away is forgotten.  Deletions are not watched (see EVENTS): retention's
own are accounted by the executor, other tools' by the executor or the sweep.
watchdog rebuilds its watches after an inotify queue overflow but tells
handlers nothing; its log record is no signal (at ``--log-level error`` it is
never made), so the watch group's own IN_Q_OVERFLOW callback is: the owner
rescans when :meth:`Watch.take_overflow` says so.

Stream folders that do not answer (a hung mount, agent/recordings/hung.py) are left
out of the recursive walk (``skip``): a stat there never returns.  :meth:`Watch.add`
watches one once it answers again.
"""
from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyEmitter, InotifyObserver, InotifyWatchGroup
from watchdog.observers.inotify_c import InotifyConstants, InotifyFD

from agent.nofollow import read_small
from agent.recordings.delete import is_segment_name, log_error
from agent.recordings.dirfd import open_folder
from agent.recordings.index import SegmentIndex
from agent.recordings.timing import playlist_entries

log = logging.getLogger("vas.retention")
#: watchdog's threads wake this often when nothing happens (its default, 1 s, shows as idle CPU).
OBSERVER_TIMEOUT = 5.0
#: A live playlist holds a few segments (FFmpeg's hls_list_size); bigger ones are not read.
PLAYLIST_MAX = 256 << 10
#: What the index needs (the inotify mask is built from this list).  Not IN_MODIFY or
#: IN_OPEN: every write of every FFmpeg would wake watchdog's threads.  Not IN_DELETE:
#: watchdog spends ~70 us of Python per event, which held retention's own deletions
#: to 6,900/s (38,000/s without).  A file deleted by another tool is found by the
#: executor (counted as gone, not deleted) or by the periodic sweep.  IN_ATTRIB: a
#: copy that keeps its times (``cp -p``, ``tar x``) sets the mtime after the close, so
#: the close alone would index an old file as new (an unlink is no IN_ATTRIB on a
#: directory's watch: retention's deletions do not wake it).
EVENTS = [FileCreatedEvent, FileClosedEvent, FileAttribEvent, FileMovedEvent, DirMovedEvent]


@dataclass
class _OverflowGroup(InotifyWatchGroup):
    """watchdog's watch group, telling ``on_overflow`` when the kernel dropped events."""

    on_overflow: Callable[[], None] = lambda: None
    skip: Callable[[str], bool] = lambda name: False  # a folder directly under the root left out

    def on_queue_overflow(self) -> None:
        self.on_overflow()  # first: events were lost, whatever the rebuild below does
        super().on_queue_overflow()

    def _add_all_callbacks(self, path: bytes) -> None:
        """watchdog's recursive walk (7.1), leaving out the folders under the root that ``skip`` names:
        their stat would never return (a hung mount)."""
        if path != self.path or not self.is_recursive:
            if os.path.dirname(path) != self.path or not self.skip(os.fsdecode(os.path.basename(path))):
                super()._add_all_callbacks(path)
            return
        self._add_callback(path)
        for top, dirnames, _ in os.walk(path, followlinks=False):
            if top == path:  # pruned in place: os.walk does not descend into what is removed
                dirnames[:] = [d for d in dirnames if not self.skip(os.fsdecode(d))]
            for dirname in dirnames:
                full = os.path.join(top, dirname)
                if not os.path.islink(full):
                    self._add_callback(full)

    def add(self, path: bytes) -> None:
        """Watch ``path`` and below (a folder that was left out answers again; blocking)."""
        with self._lock:
            if self.is_active:
                self._add_all_callbacks(path)


class _OverflowEmitter(InotifyEmitter):
    """watchdog's inotify emitter with an :class:`_OverflowGroup` (its ``on_thread_start``,
    watchdog 7.1, with that one class swapped)."""

    def __init__(self, *args: Any, on_overflow: Callable[[], None], skip: Callable[[str], bool],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_overflow, self._skip = on_overflow, skip

    def get_event_mask_from_filter(self) -> Any:
        # watchdog 7.1 maps no filter class to IN_ATTRIB alone (FileModifiedEvent brings IN_MODIFY).
        mask = super().get_event_mask_from_filter()
        if FileAttribEvent in (self._event_filter or ()):
            return type(mask)(mask | InotifyConstants.IN_ATTRIB)
        return mask

    def on_thread_start(self) -> None:
        self._inotify = _OverflowGroup(self._inotify_fd, os.fsencode(self.watch.path),
                                       is_recursive=self.watch.is_recursive,
                                       event_mask=self.get_event_mask_from_filter(),
                                       follow_symlink=self.watch.follow_symlink, on_overflow=self._on_overflow,
                                      skip=self._skip)

    def add(self, path: bytes) -> None:
        """Watch ``path`` and below, when this emitter's group is running (blocking)."""
        group = self._inotify
        if isinstance(group, _OverflowGroup):
            group.add(path)


class _Observer(InotifyObserver):
    """An inotify observer whose emitters report queue overflows to ``on_overflow``."""

    def __init__(self, *, timeout: float, on_overflow: Callable[[], None], skip: Callable[[str], bool]) -> None:
        self._inotify_fd = InotifyFD()
        self._inotify_fd.start()
        BaseObserver.__init__(self, _OverflowEmitter, timeout=timeout, inotify_fd=self._inotify_fd,
                              on_overflow=on_overflow, skip=skip)


class Watch(FileSystemEventHandler):
    """inotify on the recordings root, feeding a :class:`SegmentIndex`.  ``start()``/``stop()``."""

    def __init__(self, root: Path, index: SegmentIndex, skip: Callable[[str], bool] = lambda name: False) -> None:
        self.root, self.index = root, index
        self._prefix = str(root).rstrip("/") + "/"
        self._overflow = threading.Event()
        self.overflows = 0  # inotify queue overflows seen (each one: a rescan)
        self._observer = _Observer(timeout=OBSERVER_TIMEOUT, on_overflow=self._overflowed, skip=skip)
        self._changed: set[str] = set()
        self._rescan: set[str] = set()
        self._root_fd: int | None = None

    def start(self) -> None:
        """Open the root and watch it recursively (blocking: adds a watch per directory)."""
        self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._observer.schedule(self, str(self.root), recursive=True, event_filter=EVENTS)
        self._observer.start()

    def add(self, name: str) -> None:
        """Watch the folder ``name`` under the root that was left out (it answers again; blocking)."""
        for emitter in list(self._observer.emitters):
            if isinstance(emitter, _OverflowEmitter):
                emitter.add(os.fsencode(self.root / name))

    def stop(self) -> None:
        """Stop watching (blocking, bounded)."""
        self._observer.stop()
        self._observer.join(10)
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None

    def _overflowed(self) -> None:
        # watchdog's reader thread: only a flag and a counter here.
        self.overflows += 1
        self._overflow.set()

    def take_overflow(self) -> bool:
        """True once after an inotify queue overflow (events were lost: rescan)."""
        if self._overflow.is_set():
            self._overflow.clear()
            return True
        return False

    def take_changed(self) -> set[str]:
        """Streams whose index changed since the last call."""
        changed, self._changed = self._changed, set()
        return changed

    def take_rescans(self) -> set[str]:
        """Streams into which a directory was moved (to be scanned again)."""
        rescan, self._rescan = self._rescan, set()
        return rescan

    def force_overflow(self) -> None:
        """Act as if events were lost (the next check rescans)."""
        self._overflow.set()

    # -- watchdog's thread ------------------------------------------------------------
    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._handle(event)
        except Exception:  # the observer thread must never die: the sweep repairs the index
            log.exception("recordings: cannot handle %s", event.event_type)

    def _handle(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind in ("deleted", "moved"):
            self._gone(os.fsdecode(event.src_path), event.is_directory)
        if kind == "moved":
            self._appeared(os.fsdecode(event.dest_path), event.is_directory, moved=True)
        elif kind in ("created", "closed", "attrib"):  # attrib: a new mtime (cp -p)
            self._appeared(os.fsdecode(event.src_path), event.is_directory)

    def _split(self, path: str) -> tuple[str, str, str] | None:
        if not path.startswith(self._prefix):
            return None
        parts = path[len(self._prefix):].split("/")
        if len(parts) < 2:
            return (parts[0], "", "") if parts[0] else None
        return parts[0], "/".join(parts[1:-1]), parts[-1]

    def _gone(self, path: str, is_dir: bool) -> None:
        where = self._split(path)
        if where is None:
            return
        sid, dir_rel, name = where
        if is_dir or not name:
            self.index.discard_tree(sid, f"{dir_rel}/{name}".strip("/") if name else "")
            self._changed.add(sid)
        elif is_segment_name(name) and self.index.discard(sid, dir_rel, name):
            self._changed.add(sid)

    def _appeared(self, path: str, is_dir: bool, moved: bool = False) -> None:
        where = self._split(path)
        if where is None:
            return
        sid, dir_rel, name = where
        if is_dir or not name:
            if moved:  # a tree moved in: its files bring no events of their own
                self._rescan.add(sid)
            return  # a new directory: watchdog reports the files created in it
        if name.endswith(".m3u8") and self._root_fd is not None:
            self._playlist(sid, dir_rel, name)
            return
        if not is_segment_name(name) or self._root_fd is None:
            return
        try:
            fd = open_folder(self._root_fd, sid, dir_rel)
        except OSError:
            return  # a symlinked or vanished directory: nothing to index
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        except OSError as exc:
            log_error(f"cannot index {sid}/{dir_rel}/{name}: {exc.strerror}")
            return
        finally:
            os.close(fd)
        if stat.S_ISREG(st.st_mode):
            self.index.upsert(sid, dir_rel, name, st.st_mtime, st.st_size, st.st_dev)
            self._changed.add(sid)

    def _playlist(self, sid: str, dir_rel: str, name: str) -> None:
        """FFmpeg renamed a new playlist into place: learn its segments' media timing."""
        assert self._root_fd is not None
        try:
            fd = open_folder(self._root_fd, sid, dir_rel)
        except OSError:
            return
        try:
            text = read_small(fd, name, PLAYLIST_MAX + 1)
        except OSError:
            return  # gone or replaced already, or not a regular file: the next one says as much
        finally:
            os.close(fd)
        if len(text) > PLAYLIST_MAX:
            return  # not a live playlist (hls_list_size 0 after hours): its first 256 KiB are old news
        entries = playlist_entries(text.decode("utf-8", "replace"))
        with self.index.lock:
            self.index.timing.learn(sid, dir_rel, entries,
                                    lambda folder, seg: self.index.mtime_of(sid, folder, seg))
