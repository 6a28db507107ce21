"""Cues and announcements over real sockets: each group gets its own cues, everyone the announcement."""

from __future__ import annotations

import asyncio

import websockets

from protocol import PROTOCOL_VERSION, decode, encode
from protocol.messages import SERVER_TO_PARTICIPANT, Announce, Announcement, Join, Message, Schedule, Show, Welcome
from tests.conftest import SMALL_SHOW_CUES, RunningServer, scaled
from tests.integration.organizer_client import Organizer


class Participant:
    """A raw participant connection that keeps every message it receives (and answers no pings)."""

    def __init__(self, url: str, lang: str | None, device_id: str | None = None) -> None:
        self.url = url
        self.lang = lang
        self.device_id = device_id
        self.messages: list[Message] = []
        self.ws: websockets.ClientConnection | None = None

    async def __aenter__(self) -> "Participant":
        self.ws = await websockets.connect(self.url, max_size=2**20)
        await self.ws.send(encode(Join(v=PROTOCOL_VERSION, device_id=self.device_id, client="cue-test", lang=self.lang)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ws is not None
        await self.ws.close()

    async def first(self, cls: type[Message], timeout: float = 5.0) -> Message:
        """The first message of type ``cls`` received so far or next."""
        assert self.ws is not None
        loop = asyncio.get_running_loop()
        end = loop.time() + scaled(timeout)
        while True:
            for message in self.messages:
                if isinstance(message, cls):
                    return message
            data = await asyncio.wait_for(self.ws.recv(), max(0.01, end - loop.time()))
            assert isinstance(data, bytes)
            self.messages.append(decode(data, SERVER_TO_PARTICIPANT, 2**20))


async def test_each_group_gets_its_own_cues_in_its_language(server: RunningServer) -> None:
    """Devices in red and blue receive show with their group's cues, in French or English as they asked."""
    shows: dict[str, Show] = {}
    langs = {"fr-FR": "fr", "en-GB": "en", None: "en", "fr": "fr"}
    for lang in langs:
        async with Participant(server.ws_url, lang) as device:
            welcome = await device.first(Welcome)
            show = await device.first(Show)
            await device.first(Schedule)
            assert isinstance(welcome, Welcome) and isinstance(show, Show)
            # show comes right after welcome, before the schedule
            assert [m.TYPE for m in device.messages[:3]] == ["welcome", "show", "schedule"]
            shows[f"{welcome.group}/{langs[lang]}"] = show
    assert {key.split("/")[0] for key in shows} == {"red", "blue"}
    for key, show in shows.items():
        group, lang = key.split("/")
        assert [cue.at_us for cue in show.cues] == [round(s * 1e6) for s in SMALL_SHOW_CUES[group]]
        words = {("red", "en"): "red", ("red", "fr"): "rouge", ("blue", "en"): "blue", ("blue", "fr"): "bleu"}[(group, lang)]
        assert all(cue.text.startswith(words) for cue in show.cues)
        assert show.title == "Test show"
        assert show.when == ("Maintenant" if lang == "fr" else "Now")
        assert show.about == ("Un essai des consignes." if lang == "fr" else "A test of cues.")
    red = next(show for key, show in shows.items() if key.startswith("red"))
    assert red.cues[0].colour == "#ff0000" and red.cues[0].vibrate == (100, 50, 100)
    assert red.cues[1].colour is None and red.cues[1].vibrate is None


async def test_announcement_reaches_every_participant_and_later_joiners(server: RunningServer) -> None:
    """An organizer's announce reaches every connected device at once, and a device joining later gets it too."""
    async with Participant(server.ws_url, "en") as first, Participant(server.ws_url, "fr") as second:
        await first.first(Schedule)
        await second.first(Schedule)
        async with Organizer(server.organizer_url, server.token) as organizer:
            await organizer.overview(lambda o: o.devices == 2, scaled(5))
            before_us = server.hub.clock.now_ns() // 1000
            await organizer.send(Announce("Rain: meet under the market hall"))
            received = [await device.first(Announcement) for device in (first, second)]
            after_us = server.hub.clock.now_ns() // 1000
        for message in received:
            assert isinstance(message, Announcement)
            assert message.text == "Rain: meet under the market hall"
            assert before_us <= message.at_us <= after_us
        async with Participant(server.ws_url, "en") as late:
            again = await late.first(Announcement)
            assert isinstance(again, Announcement) and again == received[0]
            types = [m.TYPE for m in late.messages]
            assert types.index("announcement") > types.index("schedule")


async def test_a_device_keeps_its_group_when_it_comes_back(server: RunningServer) -> None:
    """A device rejoining with its device_id gets the same group and the same cues."""
    async with Participant(server.ws_url, "en") as device:
        welcome = await device.first(Welcome)
        show = await device.first(Show)
    assert isinstance(welcome, Welcome)
    for _ in range(3):
        async with Participant(server.ws_url, "en", welcome.device_id) as again:
            assert (await again.first(Welcome)).group == welcome.group  # type: ignore[attr-defined]
            assert await again.first(Show) == show


async def test_participant_sending_announce_is_closed_1008(server: RunningServer) -> None:
    """announce is an organizer command: on /ws it closes the connection with 1008 and says why."""
    async with Participant(server.ws_url, "en") as device:
        await device.first(Schedule)
        assert device.ws is not None
        await device.ws.send(encode(Announce("I am not the organizer")))
        try:
            while True:
                data = await asyncio.wait_for(device.ws.recv(), scaled(5))
                assert isinstance(data, bytes)
                device.messages.append(decode(data, SERVER_TO_PARTICIPANT, 2**20))
        except websockets.ConnectionClosed:
            pass
        assert device.ws.close_code == 1008
        assert "message type 'announce' is not allowed" in (device.ws.close_reason or "")
        assert not any(isinstance(m, Announcement) for m in device.messages)
