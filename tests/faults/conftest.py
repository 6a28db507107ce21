"""Fixtures of the fault tests: background tasks cancelled (and their crashes raised) at the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest

from tests.faults.helpers import Spawn
from tests.integration.processes import cancel_all, crowd  # noqa: F401 (crowd is a fixture)


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """``spawn(coro)``: run it in the background until the test ends."""
    tasks: list[asyncio.Task[None]] = []

    def start(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        tasks.append(task)
        return task

    try:
        yield start
    finally:
        await cancel_all(tasks)
