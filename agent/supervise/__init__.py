"""Supervision: one FFmpeg per stream, run in its own session, watched for exits and
stalls, restarted with backoff; the stream states and their one table of moves.

Entry: :class:`stream.Stream`, one per configured stream.
"""
