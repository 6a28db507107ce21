// Drives one page in headless Firefox (Debian's firefox-esr) for the Python
// engine tests, through puppeteer-core over WebDriver BiDi (no geckodriver).
//
// Usage: node firefox_driver.mjs URL
// Environment: FIREFOX (default /usr/bin/firefox-esr); PULSE_SERVER must name
// a sound server (Web Audio needs one; the test starts a private PulseAudio);
// UNISONO_FIREFOX_PROFILE a directory for the profile (default: a temporary one).
//
// Protocol on stdio, one JSON object a line:
//   out {"browserPid": 1234}                         once Firefox runs (puppeteer starts it detached: the
//                                                     leader of its own process group, which the test kills)
//   out {"ready": true, "version": "..."}            once the page has loaded
//   in  {"id": 1, "eval": "() => 1 + 1"}              a function's source, run in the page
//   out {"id": 1, "value": 2} | {"id": 1, "error": "..."}
//   in  {"id": 2, "click": "#unlock"}                 a real (trusted) click
//   in  {"id": 3, "open": "http://..."}               open a page in a new tab and browser context
//                                                     (fresh storage); later commands go to it
//                                                     (the old tab keeps playing: navigating a tab whose
//                                                     AudioContext ran hung Firefox's page for good in 2 of 5 runs)
// Commands run concurrently and answer by id: one evaluate that never returns
// (seen once in a few runs, with puppeteer-core 24 and Firefox 153) does not hold up the others.
// stdin closing closes the browser. UNISONO_DRIVER_DEBUG=1 logs every command and answer to stderr.

import { createInterface } from 'node:readline';
import puppeteer from 'puppeteer-core';

const url = process.argv[2];
if (!url) {
  process.stderr.write('usage: node firefox_driver.mjs URL\n');
  process.exit(2);
}

const browser = await puppeteer.launch({
  browser: 'firefox',
  executablePath: process.env.FIREFOX ?? '/usr/bin/firefox-esr',
  headless: true,
  // Autoplay is left at Firefox's default: the page must unlock audio with the click.
  extraPrefsFirefox: {
    'media.autoplay.default': 1,
    // outputLatency (and getOutputTimestamp(), which reads it twice) is a
    // synchronous call to the audio server made holding the audio graph's lock
    // whenever no non-zero latency is cached, which with a PulseAudio null sink
    // is most of the time. With audio remoted to the parent process, one such
    // call meeting the audio callback deadlocks the page for good (1 run in 4
    // here; gdb stacks in docs/BROWSERS.md). Fingerprinting protection's
    // AudioContext target alone (no other target) makes outputLatency a fixed
    // 25 ms on Linux, answered without the graph: the page keeps running.
    'privacy.fingerprintingProtection': true,
    'privacy.fingerprintingProtection.overrides': '-AllTargets,+AudioContext',
  },
  userDataDir: process.env.UNISONO_FIREFOX_PROFILE || undefined,
});
const debug = (text) => {
  if (process.env.UNISONO_DRIVER_DEBUG) process.stderr.write(`[driver] ${Date.now()} ${text.slice(0, 120)}\n`);
};
const write = (object) => {
  const line = JSON.stringify(object);
  debug(`-> ${line}`);
  process.stdout.write(`${line}\n`);
};
write({ browserPid: browser.process()?.pid ?? null });
async function open(target) {
  // Its own browser context: its own storage, a new device (as Playwright's new_context).
  const tab = await (await browser.createBrowserContext()).newPage();
  tab.on('console', (message) => process.stderr.write(`[firefox] ${message.text()}\n`));
  tab.on('pageerror', (error) => process.stderr.write(`[firefox] page error: ${error.message}\n`));
  await tab.goto(target);
  return tab;
}
let page = await open(url);
write({ ready: true, version: await browser.version() });

async function run(command) {
  try {
    if (command.eval !== undefined) {
      const value = await page.evaluate(`(${command.eval})()`);
      write({ id: command.id, value: value === undefined ? null : value });
    } else if (command.open !== undefined) {
      page = await open(command.open);
      write({ id: command.id, value: null });
    } else if (command.click !== undefined) {
      await page.click(command.click);
      write({ id: command.id, value: null });
    } else {
      write({ id: command.id, error: `unknown command: ${Object.keys(command).join(', ')}` });
    }
  } catch (error) {
    write({ id: command.id, error: String(error?.message ?? error) });
  }
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  debug(`<- ${line}`);
  run(JSON.parse(line));
}
await browser.close();
