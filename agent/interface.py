"""What the control socket and the snapshot need of the agent: its exceptions and two
narrow views of it (``Protocol``), so that ``control`` and ``views`` sit below ``agent.py``.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent.config.model import Config
from agent.publisher import Publisher
from agent.reload import ReloadPlan
from agent.supervise.stream import Stream

if TYPE_CHECKING:  # annotations only: the agent imports these when their part is configured
    from agent.fleet.node import Fleet
    from agent.recordings.service import Retention
    from agent.sfu.consumers import ConsumerTracker
    from agent.sfu.process import SfuProcess


class AlreadyRunning(RuntimeError):
    """Another agent holds this runtime_dir."""


class ReloadInProgress(RuntimeError):
    """A reload is already being applied (or the agent is stopping)."""


class ReloadFailed(RuntimeError):
    """A reload failed for a reason other than an invalid file (recorded in ``last_reload``)."""


class Controlled(Protocol):
    """The agent as the control socket drives it."""

    cfg: Config
    last_reload: dict[str, Any] | None
    retention: Retention | None

    @property
    def streams(self) -> Mapping[str, Stream]:
        """Every configured stream, by id."""

    def view_json(self) -> str:
        """The snapshot as it is right now, as JSON text."""

    async def reload(self, *, wait: bool = False) -> ReloadPlan:
        """Apply the config file; raises :class:`ReloadInProgress` or :class:`ReloadFailed`."""

    async def restart_stream(self, sid: str) -> None:
        """Restart one stream now (reason ``manual``)."""

    async def cleanup(self, sid: str | None, *, dry_run: bool,
                      retention_days: float | None = None) -> dict[str, Any]:
        """Apply retention now; the health API's result shape."""

    async def consumer_heartbeat(self, consumer_id: str) -> bool:
        """A viewer's heartbeat; False when the SFU has no such consumer."""

    async def close_consumer(self, stream_id: str, consumer_id: str) -> bool:
        """Force-close one consumer of ``stream_id``; False when unknown."""


class Observed(Protocol):
    """The agent as its snapshot shows it."""

    cfg: Config
    started_at: float
    status: str
    runtime_dir: Path
    publisher: Publisher
    last_reload: dict[str, Any] | None
    needs_restart: tuple[str, ...]
    retention: Retention | None
    fleet: Fleet | None
    sfu: SfuProcess | None
    consumers: ConsumerTracker | None

    @property
    def streams(self) -> Mapping[str, Stream]:
        """Every configured stream, by id."""
