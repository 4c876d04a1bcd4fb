from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .support import Backend, FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    server = await Backend().start()
    yield server
    await server.stop()
