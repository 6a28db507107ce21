"""The organizer console drives real participant pages through the HTTP API.

Each test runs a real server, participant pages in their own browser
contexts (tapped to unlock audio, as a person would) and the console page,
and checks what the organizer sees and what the phones do.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from tests.browser.conftest import open_organizer, start_from_console
from tests.browser.test_start_browser import open_participant, true_audible_ms
from tests.conftest import RunningServer, scaled, small_show, start_server
from tests.server.test_poster import decode_qr

pytestmark = pytest.mark.browser

# What test_start_browser allows between two pages' audible starts, in ms.
START_TOLERANCE_MS = 5.0
READY = (
    "() => window.unisono && window.unisono.estimate && window.unisono.estimate.bound_us < 5000"
    " && ['loaded', 'unlocked'].includes(window.unisono.state)"
)


@pytest.fixture
async def show_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """A server with the two-group test show, its tracks 20 s long: a start has time to be heard."""
    runner, server = await start_server(tmp_path, small_show(tmp_path, seconds=20.0))
    yield server
    await runner.cleanup()


async def ready_pages(browser: Browser, server: RunningServer, count: int = 2) -> list[Page]:
    """``count`` participant pages, unlocked and synced."""
    pages = [await open_participant(browser, server.base_url + "/", 0.0, 0.0) for _ in range(count)]
    for page in pages:
        await page.wait_for_function(READY, timeout=scaled(15) * 1000)
    return pages


async def test_console_start_starts_two_pages_together(browser: Browser, show_server: RunningServer) -> None:
    """Start in the console: both pages get the server's T and are heard within 5 ms of each other."""
    pages = await ready_pages(browser, show_server)
    organizer = await open_organizer(browser, show_server.base_url, 2)
    await start_from_console(organizer, 3)
    for page in pages:
        await page.wait_for_function("() => window.unisono.start !== null", timeout=scaled(10) * 1000)
    start_ns = show_server.hub.show.snapshot.start_ns
    assert start_ns is not None
    assert [await page.evaluate("() => window.unisono.start.startUs") for page in pages] == [start_ns // 1000] * 2
    audible = [await true_audible_ms(page) for page in pages]
    assert abs(audible[0] - audible[1]) <= START_TOLERANCE_MS, audible
    assert all(abs(a - start_ns / 1e6) <= START_TOLERANCE_MS for a in audible), audible
    await organizer.wait_for_function("() => document.querySelector('#countdown').textContent.startsWith('playing for')",
                                      timeout=scaled(10) * 1000)


async def test_abort_before_t_and_no_page_starts(browser: Browser, show_server: RunningServer) -> None:
    """Abort before T: every page goes back to idle and none plays, even after T has passed."""
    pages = await ready_pages(browser, show_server)
    organizer = await open_organizer(browser, show_server.base_url, 2)
    await start_from_console(organizer, 5)
    start_ns = show_server.hub.show.snapshot.start_ns
    assert start_ns is not None
    for page in pages:
        await page.wait_for_function("() => window.unisono.state === 'scheduled'", timeout=scaled(5) * 1000)
    assert await organizer.locator("#countdown").inner_text() != ""
    await organizer.click("#abort")
    for page in pages:
        await page.wait_for_function("() => window.unisono.state === 'idle'", timeout=scaled(5) * 1000)
    assert show_server.hub.clock.now_ns() < start_ns, "the abort arrived after T: the test machine is too slow"
    await asyncio.sleep(max(0.0, (start_ns - show_server.hub.clock.now_ns()) / 1e9) + 1.0)
    for page in pages:
        assert await page.evaluate("() => window.unisono.state") == "idle"
        assert await page.evaluate("() => window.unisono.start") is None
    assert show_server.hub.show.state == "idle"
    await organizer.wait_for_function("() => document.querySelector('#state').dataset.state === 'idle'")
    assert await organizer.locator("#countdown").inner_text() == ""
    assert await organizer.locator("#error").is_hidden()


async def test_announcement_from_the_console_reaches_every_page(browser: Browser, show_server: RunningServer) -> None:
    """An announcement typed in the console shows on every participant page, and the console says to how many."""
    pages = await ready_pages(browser, show_server)
    organizer = await open_organizer(browser, show_server.base_url, 2)
    await organizer.fill("#announce-text", "Rain: meet under the market hall")
    await organizer.click("#announce")
    for page in pages:
        await page.wait_for_function(
            "() => document.querySelector('#announcement-text').textContent === 'Rain: meet under the market hall'",
            timeout=scaled(5) * 1000,
        )
        assert await page.locator("#announcement").is_visible()
    await organizer.wait_for_function("() => document.querySelector('#announce-sent').textContent.includes('2 phones')")


async def test_console_qr_code_decodes_to_the_join_url(browser: Browser, show_server: RunningServer) -> None:
    """The QR code the console shows, as rendered on screen, decodes to the page participants open."""
    organizer = await open_organizer(browser, show_server.base_url, 0)
    qr = organizer.locator("#join-qr")
    await organizer.wait_for_function("() => document.querySelector('#join-qr').naturalWidth > 0")
    assert decode_qr(await qr.screenshot()) == [show_server.base_url + "/"]
    assert await organizer.locator("#poster").get_attribute("href") == "/poster"
    await organizer.wait_for_function("() => document.querySelector('#join-url').textContent !== ''")
    assert await organizer.locator("#join-url").inner_text() == show_server.base_url + "/"


async def test_start_with_too_few_ready_asks_then_starts_on_confirm(browser: Browser, show_server: RunningServer) -> None:
    """With one of two phones ready, Start asks in the page; nothing starts until the organizer confirms."""
    (ready,) = await ready_pages(browser, show_server, 1)
    locked = await (await browser.new_context()).new_page()
    await locked.goto(show_server.base_url + "/")  # never tapped: its audio stays locked
    organizer = await open_organizer(browser, show_server.base_url, 2)
    # The premise, as the server sees it: the page's own state turns ready a
    # moment before its ready report (downloaded, unlocked) reaches the server.
    async with asyncio.timeout(scaled(10)):
        while show_server.hub.fleet().funnel.ready < 1:
            await asyncio.sleep(0.05)
    await start_from_console(organizer, 3, confirm=False)
    dialog = organizer.locator("#confirm-dialog")
    assert await dialog.is_visible()
    assert "1 of 2" in await organizer.locator("#confirm-message").inner_text()
    await asyncio.sleep(0.5)
    assert show_server.hub.show.state == "idle"
    await organizer.click("#confirm-yes")
    await ready.wait_for_function("() => window.unisono.start !== null", timeout=scaled(10) * 1000)
    assert show_server.hub.show.state == "scheduled"
    assert await dialog.is_hidden()
    assert await organizer.locator("#error").is_hidden()


async def test_cancel_keeps_the_show_idle(browser: Browser, show_server: RunningServer) -> None:
    """Cancel in the confirmation dialog sends nothing: the show stays idle."""
    await (await (await browser.new_context()).new_page()).goto(show_server.base_url + "/")  # locked audio
    organizer = await open_organizer(browser, show_server.base_url, 1)
    await start_from_console(organizer, 3, confirm=False)
    await organizer.click("#confirm-no")
    await asyncio.sleep(0.5)
    assert await organizer.locator("#confirm-dialog").is_hidden()
    assert show_server.hub.show.state == "idle"
    assert [e.action for e in show_server.hub.events].count("start") == 0


async def test_funnel_histogram_and_log_show_the_devices_and_the_start(browser: Browser, show_server: RunningServer) -> None:
    """The funnel counts both pages at every stage, the histogram holds both bounds, the log the console's start."""
    await ready_pages(browser, show_server)
    organizer = await open_organizer(browser, show_server.base_url, 2)
    total = "document.querySelector('#funnel tr.total')"
    await organizer.wait_for_function(
        f"() => [...{total}.querySelectorAll('td')].every((td) => td.textContent === '2')", timeout=scaled(10) * 1000
    )
    stages = await organizer.locator("#funnel tr.total td").evaluate_all("(tds) => tds.map((td) => td.dataset.stage)")
    assert stages == ["connected", "downloaded", "unlocked", "synced", "ready"]
    groups = await organizer.locator("#funnel tr:not(.total) th").all_inner_texts()
    assert groups == ["red", "blue"]
    group_counts = await organizer.locator("#funnel tr:not(.total) td[data-stage=connected]").all_inner_texts()
    assert sorted(group_counts) == ["1", "1"]
    counts = await organizer.locator("#bounds .bar .count").all_inner_texts()
    assert sum(int(c) for c in counts) == 2
    # Both bounds are under 5 ms: the bars up to 5 ms hold them, the "no estimate" bar none.
    labels = await organizer.locator("#bounds .bar .label").all_inner_texts()
    assert labels[-1] == "no estimate" and counts[-1] == "0"
    assert await organizer.locator("#laggards").inner_text() == "none: every phone is ready"
    assert "ms" in await organizer.locator("#clock").inner_text()
    assert await organizer.locator("#lead-min").inner_text() != "—"
    await start_from_console(organizer, 3)
    await organizer.wait_for_function(
        "() => [...document.querySelectorAll('#events tr')].some((tr) => tr.cells[2].textContent === 'start'"
        " && tr.cells[1].textContent.startsWith('console '))",
        timeout=scaled(5) * 1000,
    )


async def test_console_speaks_french_to_a_french_browser(browser: Browser, show_server: RunningServer) -> None:
    """navigator.language fr-*: the console's texts are French."""
    context = await browser.new_context(locale="fr-FR")
    organizer = await context.new_page()
    await organizer.goto(f"{show_server.base_url}/organizer.html?token={show_server.token}")
    await organizer.wait_for_function("() => document.querySelector('#state').dataset.state === 'idle'")
    assert await organizer.locator("html").get_attribute("lang") == "fr"
    assert await organizer.locator("#start").inner_text() == "Démarrer"
    assert await organizer.locator("#state").inner_text() == "à l’arrêt"
