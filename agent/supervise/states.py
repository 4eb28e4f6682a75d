"""Stream states and the one table of legal moves between them.

``initializing -> ready -> live``; any state may fall to ``error`` (process
exited or stalled, a restart is pending) or ``stopped`` (disabled, removed,
shutting down).  Stdlib only: the exporter and vasctl import this too.
"""
from __future__ import annotations

import enum


class StreamState(str, enum.Enum):
    """Where one stream is in its lifecycle (values are what the snapshot shows)."""

    INITIALIZING = "initializing"  # process spawned, no media yet
    READY = "ready"                # media flowing (FFmpeg progress advances)
    LIVE = "live"                  # media flowing and, with an SFU, producer confirmed
    ERROR = "error"                # exited or stalled; restart pending after backoff
    STOPPED = "stopped"            # disabled, removed or shutting down


_S = StreamState

#: The legal moves.  ``Stream.set_state`` is the only code that changes state and
#: it refuses anything not listed here.
TRANSITIONS: dict[StreamState, frozenset[StreamState]] = {
    _S.INITIALIZING: frozenset({_S.READY, _S.ERROR, _S.STOPPED}),
    _S.READY: frozenset({_S.LIVE, _S.ERROR, _S.STOPPED}),
    _S.LIVE: frozenset({_S.READY, _S.ERROR, _S.STOPPED}),
    _S.ERROR: frozenset({_S.INITIALIZING, _S.STOPPED}),
    _S.STOPPED: frozenset({_S.INITIALIZING}),
}


class IllegalTransition(RuntimeError):
    """A state change the table does not allow: a bug, never an operator error."""


def check_transition(old: StreamState, new: StreamState) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is in the table."""
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"illegal stream state change {old.value} -> {new.value}")
