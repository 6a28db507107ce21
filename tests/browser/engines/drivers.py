"""One participant page in each engine, behind one small async interface.

- Chromium: Playwright (as the other browser tests).
- WebKit: Selenium + WebKitWebDriver + MiniBrowser (WebKitGTK) under a private
  Xvfb; WebDriver classic is blocking, so every call runs in a thread and the
  test's server keeps serving.
- Firefox: firefox_driver.mjs (puppeteer-core over WebDriver BiDi), spoken to
  over its stdio, JSON a line.

Web Audio in WebKitGTK and Firefox needs a sound server: a private PulseAudio
with a null sink and its own socket (PulseSink).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

from playwright.async_api import Browser

HERE = Path(__file__).resolve().parent
MINIBROWSER = os.environ.get("UNISONO_MINIBROWSER", "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser")
WEBKIT_DRIVER = os.environ.get("UNISONO_WEBKIT_DRIVER", "/usr/bin/WebKitWebDriver")
FIREFOX = os.environ.get("UNISONO_FIREFOX", "/usr/bin/firefox-esr")
# How long a browser or a sound server may take to come up on a loaded machine.
START_TIMEOUT_S = 30.0
# How long one evaluate or click may take before it counts as lost (wait_for polls again).
CALL_TIMEOUT_S = 5.0


class EnginePage(Protocol):
    """A participant page: run a function's source in it, click, load another URL (a fresh page)."""

    engine: str
    version: str

    async def evaluate(self, function_source: str) -> Any: ...

    async def click(self, selector: str) -> None: ...

    async def goto(self, url: str) -> None: ...

    async def close(self) -> None: ...


async def wait_for(page: EnginePage, function_source: str, timeout_s: float) -> Any:
    """Poll ``function_source`` in the page until it returns something truthy; its value."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = await page.evaluate(function_source)
        except TimeoutError:
            value = None  # a lost evaluate (firefox_driver.mjs): poll again until the deadline
        if value:
            return value
        if time.monotonic() > deadline:
            state = await page.evaluate("() => JSON.stringify(window.unisono ?? null)")
            raise AssertionError(f"{page.engine}: timed out after {timeout_s} s waiting for {function_source}; page: {state[:600]}")
        await asyncio.sleep(0.1)


def need(path: str, how: str) -> None:
    if shutil.which(path) is None and not os.path.exists(path):
        raise RuntimeError(f"{path} not found: {how}")


# The audio path (the sound server, WebKit's and Firefox's processes) runs
# ahead of everything else the test starts, as a phone runs its audio thread
# at real-time priority: on two shared cores a starved null sink or audio
# thread stalls the audio clock just before T, which no page could foresee.
AUDIO_NICE = -10


def audio_priority() -> None:
    """In a child before exec: raise its scheduling priority if allowed (root); otherwise leave it."""
    with contextlib.suppress(PermissionError):
        os.nice(AUDIO_NICE)


def kill_group(pgid: int) -> None:
    """SIGKILL every process left in process group ``pgid`` (gone already is fine).

    Every helper starts as the leader of its own session (``start_new_session``),
    so its group holds what it spawned too: WebKitWebDriver's MiniBrowser and web
    processes, the node driver's children. The group's number cannot be reused
    while any member lives, so this never reaches a stranger's processes.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a helper started with ``start_new_session`` and everything in its group.

    SIGTERM to the group, up to 5 s for the leader to go, then SIGKILL to
    whatever of the group is left (on every path: nothing outlives the test).
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    kill_group(process.pid)
    process.wait()


class PulseSink:
    """A private PulseAudio with a null sink; ``server`` is the PULSE_SERVER value."""

    def __init__(self, directory: Path) -> None:
        need("pulseaudio", "run ./run-tests, which installs it (apt-get install pulseaudio)")
        directory.mkdir(parents=True, exist_ok=True)
        socket = directory / "native"
        self.server = f"unix:{socket}"
        # HOME and XDG_RUNTIME_DIR in the temp dir: nothing of the user's
        # session is read or written. As root pulseaudio only warns (not
        # --system: that would refuse module arguments and want a system user).
        env = {**os.environ, "HOME": str(directory), "XDG_RUNTIME_DIR": str(directory)}
        # Its log goes to a file: a pipe nobody reads fills up and blocks the daemon.
        self.log = directory / "pulseaudio.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disable-shm=yes",
                    "--load=module-null-sink sink_name=unisono_null",
                    f"--load=module-native-protocol-unix auth-anonymous=1 socket={socket}",
                ],
                env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True, preexec_fn=audio_priority,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not socket.exists():
            if self.process.poll() is not None:
                error = self.log.read_text(errors="replace")
                raise RuntimeError(f"pulseaudio exited with {self.process.returncode}: {error[-800:]}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("pulseaudio did not open its socket")
            time.sleep(0.05)

    def close(self) -> None:
        stop(self.process)


class Xvfb:
    """A private X display (MiniBrowser does not run headless); ``display`` is the DISPLAY value."""

    def __init__(self) -> None:
        need("Xvfb", "run ./run-tests, which installs it (apt-get install xvfb)")
        read, write = os.pipe()
        # -displayfd: Xvfb picks a free display and writes its number when ready.
        self.process = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        os.close(write)
        with os.fdopen(read) as pipe:
            number = pipe.readline().strip()
        if not number:
            self.close()
            raise RuntimeError("Xvfb did not report a display")
        self.display = f":{number}"

    def close(self) -> None:
        stop(self.process)


class ChromiumPage:
    engine = "chromium"

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.version = browser.version
        self.page: Any = None

    async def goto(self, url: str) -> None:
        if self.page is not None:
            await self.page.context.close()
        context = await self.browser.new_context()
        self.page = await context.new_page()
        self.page.on("console", lambda message: print(f"[chromium] {message.text}"))
        await self.page.goto(url)

    async def evaluate(self, function_source: str) -> Any:
        return await self.page.evaluate(function_source)

    async def click(self, selector: str) -> None:
        await self.page.click(selector)

    async def close(self) -> None:
        if self.page is not None:
            await self.page.context.close()


class WebKitPage:
    engine = "webkit"

    def __init__(self, driver: Any, xvfb: Xvfb, driver_pid: int) -> None:
        self.driver = driver
        self.xvfb = xvfb
        self.driver_pid = driver_pid  # WebKitWebDriver's: the leader of its group (MiniBrowser and its web processes)
        self.version = str(driver.capabilities.get("browserVersion", "?"))

    @classmethod
    async def launch(cls, pulse: PulseSink) -> WebKitPage:
        need(WEBKIT_DRIVER, "run ./run-tests, which installs it (apt-get install webkit2gtk-driver)")
        need(MINIBROWSER, "run ./run-tests, which installs it (apt-get install webkit2gtk-driver)")
        from selenium import webdriver

        xvfb = Xvfb()
        options = webdriver.WebKitGTKOptions()
        options.binary_location = MINIBROWSER
        options.add_argument("--automation")
        env = {**os.environ, "DISPLAY": xvfb.display, "PULSE_SERVER": pulse.server}
        # Its own session: MiniBrowser and the web processes it spawns stay in its group (stop()).
        service = webdriver.WebKitGTKService(executable_path=WEBKIT_DRIVER, env=env, popen_kw={"start_new_session": True, "preexec_fn": audio_priority})
        try:
            driver = await asyncio.to_thread(webdriver.WebKitGTK, options=options, service=service)
        except BaseException:
            started = getattr(service, "process", None)  # set once WebKitWebDriver was spawned
            if started is not None:
                stop(started)
            xvfb.close()
            raise
        driver.set_script_timeout(START_TIMEOUT_S)
        return cls(driver, xvfb, service.process.pid)

    async def goto(self, url: str) -> None:
        await asyncio.to_thread(self.driver.get, url)

    async def evaluate(self, function_source: str) -> Any:
        return await asyncio.to_thread(self.driver.execute_script, f"return ({function_source})();")

    async def click(self, selector: str) -> None:
        from selenium.webdriver.common.by import By

        def click() -> None:
            self.driver.find_element(By.CSS_SELECTOR, selector).click()

        await asyncio.to_thread(click)

    async def close(self) -> None:
        try:
            # quit() ends the session and WebKitWebDriver; a hung one is killed below.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.to_thread(self.driver.quit), START_TIMEOUT_S)
        finally:
            kill_group(self.driver_pid)
            self.xvfb.close()


class FirefoxPage:
    """firefox_driver.mjs in a subprocess; it opens its first URL at launch."""

    engine = "firefox"

    def __init__(self, process: asyncio.subprocess.Process, browser_pid: int, version: str) -> None:
        self.process = process
        self.browser_pid = browser_pid  # Firefox's: puppeteer starts it detached, the leader of its own group
        self.version = version
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        """Hand each answer to the call waiting for its id (answers come in any order)."""
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            answer = json.loads(line)
            future = self.waiting.pop(answer.get("id"), None)
            if future is not None and not future.done():
                future.set_result(answer)
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(RuntimeError("firefox_driver.mjs exited"))

    @classmethod
    async def launch(cls, url: str, pulse: PulseSink, profile: Path) -> FirefoxPage:
        """The driver, Firefox (profile in ``profile``) and a page at ``url``; nothing left running if it fails."""
        need(FIREFOX, "run ./run-tests, which installs it (apt-get install firefox-esr)")
        if not (HERE / "node_modules" / "puppeteer-core").is_dir():
            raise RuntimeError(f"puppeteer-core is missing: run ./run-tests, or npm ci --prefix {HERE}")
        # Its own session, so its group can be killed whole; Firefox is in a
        # group of its own (puppeteer spawns it detached), killed by the pid it reports.
        process = await asyncio.create_subprocess_exec(
            "node", str(HERE / "firefox_driver.mjs"), url,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, start_new_session=True,
            preexec_fn=audio_priority,  # Firefox, spawned by the driver, inherits it
            # Firefox's crashhelper leaves the group (setsid) but watches Firefox's pid and exits with it.
            env={**os.environ, "FIREFOX": FIREFOX, "PULSE_SERVER": pulse.server, "UNISONO_FIREFOX_PROFILE": str(profile)},
        )
        assert process.stdout is not None
        browser_pid: int | None = None
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                while True:
                    line = await process.stdout.readline()
                    if not line:
                        await process.wait()
                        raise RuntimeError(f"firefox_driver.mjs exited with {process.returncode} before the page loaded")
                    message = json.loads(line)
                    browser_pid = message.get("browserPid", browser_pid)
                    if message.get("ready"):
                        assert browser_pid is not None
                        return cls(process, browser_pid, message["version"])
        except BaseException:
            await kill_driver(process, browser_pid)
            raise

    async def call(self, command: dict[str, Any], timeout_s: float = CALL_TIMEOUT_S) -> Any:
        assert self.process.stdin is not None
        command_id = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[command_id] = future
        self.process.stdin.write((json.dumps({"id": command_id, **command}) + "\n").encode())
        await self.process.stdin.drain()
        try:
            answer = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            self.waiting.pop(command_id, None)
            raise TimeoutError(f"firefox: no answer to {str(command)[:100]} in {timeout_s} s") from None
        if "error" in answer:
            raise RuntimeError(f"firefox: {answer['error']}")
        return answer["value"]

    async def goto(self, url: str) -> None:
        """In a new tab (see firefox_driver.mjs): the old page keeps playing."""
        await self.call({"open": url}, START_TIMEOUT_S)

    async def evaluate(self, function_source: str) -> Any:
        return await self.call({"eval": function_source})

    async def click(self, selector: str) -> None:
        # The click's handler creates and resumes the AudioContext: Firefox on a busy machine took seconds.
        await self.call({"click": selector}, START_TIMEOUT_S)

    async def close(self) -> None:
        """Close stdin (the driver closes Firefox), then kill both groups whatever happened."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 10)
        await kill_driver(self.process, self.browser_pid)
        self.reader.cancel()


async def kill_driver(process: asyncio.subprocess.Process, browser_pid: int | None) -> None:
    """SIGKILL Firefox's group and the driver's: a killed node does not take a detached Firefox with it."""
    if browser_pid is not None:
        kill_group(browser_pid)
    kill_group(process.pid)
    await process.wait()
