"""Shared fixtures: a controllable clock and a memory store that follows it."""

from __future__ import annotations

import pytest
from hypothesis import settings

from websession.stores import MemoryStore

# No example database: tests write nowhere but tmp_path. No deadline: a slow CI machine
# must not turn a correct property into a flaky failure.
settings.register_profile("websession", database=None, deadline=None)
settings.load_profile("websession")


class FakeClock:
    """A clock for stores and flows: returns ``now`` until a test moves it with ``advance``."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory_store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock)
