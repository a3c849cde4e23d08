"""Flow tests share the session fixtures of tests/conftest.py (the ``world`` fixture too)."""

from tests.support.world import BAD_EVENTS, World, discard_vm

__all__ = ["BAD_EVENTS", "World", "discard_vm"]
