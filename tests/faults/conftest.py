"""The fault suite runs the real agent like the integration tests do."""
from __future__ import annotations

from tests.integration.conftest import agent_factory

__all__ = ["agent_factory"]
