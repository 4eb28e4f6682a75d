"""Recordings: the index of every segment under ``recordings.root``, kept current by
inotify, and retention, the only code that deletes footage.

Entry: :class:`service.Retention`.
"""
