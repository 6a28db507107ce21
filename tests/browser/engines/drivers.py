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


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a helper process we started, killing it if it does not go within 5 s."""
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    if process.poll() is None:
        process.kill()
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
        self.process = subprocess.Popen(
            [
                "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disable-shm=yes",
                "--load=module-null-sink sink_name=unisono_null",
                f"--load=module-native-protocol-unix auth-anonymous=1 socket={socket}",
            ],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not socket.exists():
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
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
            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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

    def __init__(self, driver: Any, xvfb: Xvfb) -> None:
        self.driver = driver
        self.xvfb = xvfb
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
        service = webdriver.WebKitGTKService(executable_path=WEBKIT_DRIVER, env=env)
        try:
            driver = await asyncio.to_thread(webdriver.WebKitGTK, options=options, service=service)
        except BaseException:
            xvfb.close()
            raise
        driver.set_script_timeout(START_TIMEOUT_S)
        return cls(driver, xvfb)

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
            await asyncio.to_thread(self.driver.quit)
        finally:
            self.xvfb.close()


class FirefoxPage:
    """firefox_driver.mjs in a subprocess; it opens its first URL at launch."""

    engine = "firefox"

    def __init__(self, process: asyncio.subprocess.Process, version: str) -> None:
        self.process = process
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
    async def launch(cls, url: str, pulse: PulseSink) -> FirefoxPage:
        need(FIREFOX, "run ./run-tests, which installs it (apt-get install firefox-esr)")
        if not (HERE / "node_modules" / "puppeteer-core").is_dir():
            raise RuntimeError(f"puppeteer-core is missing: run ./run-tests, or npm ci --prefix {HERE}")
        process = await asyncio.create_subprocess_exec(
            "node", str(HERE / "firefox_driver.mjs"), url,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "FIREFOX": FIREFOX, "PULSE_SERVER": pulse.server},
        )
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        if not line:
            await process.wait()
            raise RuntimeError(f"firefox_driver.mjs exited with {process.returncode} before the page loaded")
        return cls(process, json.loads(line)["version"])

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
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        self.reader.cancel()
