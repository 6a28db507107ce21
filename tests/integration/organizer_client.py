"""A minimal organizer client for the integration tests."""

from __future__ import annotations

import asyncio

import websockets

from protocol import PROTOCOL_VERSION, decode, encode
from protocol.messages import SERVER_TO_ORGANIZER, Error, Hello, Message, Overview


class Organizer:
    """Connects, authenticates, and reads overviews and errors."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.ws: websockets.ClientConnection | None = None

    async def __aenter__(self) -> "Organizer":
        self.ws = await websockets.connect(self.url)
        await self.send(Hello(v=PROTOCOL_VERSION, token=self.token))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ws is not None
        await self.ws.close()

    async def send(self, message: Message) -> None:
        assert self.ws is not None
        await self.ws.send(encode(message))

    async def receive(self, timeout: float = 5.0) -> Message:
        assert self.ws is not None
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(data, bytes)
        return decode(data, SERVER_TO_ORGANIZER, 64 * 1024)

    async def until(self, predicate, timeout: float = 5.0) -> Message:  # type: ignore[no-untyped-def]
        """Read messages until one satisfies ``predicate``; return it."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            message = await self.receive(max(0.01, end - loop.time()))
            if predicate(message):
                return message

    async def overview(self, predicate=lambda o: True, timeout: float = 5.0) -> Overview:  # type: ignore[no-untyped-def]
        message = await self.until(lambda m: isinstance(m, Overview) and predicate(m), timeout)
        assert isinstance(message, Overview)
        return message

    async def error(self, timeout: float = 5.0) -> Error:
        message = await self.until(lambda m: isinstance(m, Error), timeout)
        assert isinstance(message, Error)
        return message
