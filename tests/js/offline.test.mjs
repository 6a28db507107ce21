// Tests of clients/web/js/offline.js: the show's file list, the download with progress, the kept session.
import test from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

import {
  SHELL_URLS, SESSION_KEY, SESSION_MAX_AGE_US, showUrls, showSizes, downloadedFraction, downloadAll, saveSession, loadSession,
  UNKNOWN_FILE_BYTES,
} from '../../clients/web/js/offline.js';

const WEB = new URL('../../clients/web/', import.meta.url).pathname;

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

// The organizer console's own files: participants never load them.
const CONSOLE_FILES = new Set(['/js/organizer.js', '/js/console.js', '/css/console.css']);
// Loaded only by the tests (?testclock=...): phones never need it offline.
const TEST_ONLY_FILES = new Set(['/js/testclock.js']);

test('the shell lists the page, its stylesheet and every module but the organizer console', () => {
  const modules = files(WEB)
    .map((path) => '/' + relative(WEB, path))
    .filter((path) => /\.(m?js|css)$/.test(path) && !CONSOLE_FILES.has(path) && !TEST_ONLY_FILES.has(path) && path !== '/sw.js');
  assert.deepEqual([...SHELL_URLS].filter((url) => url !== '/').sort(), modules.sort());
  assert.ok(SHELL_URLS.includes('/'));
});

test('every module the page imports is in the shell', () => {
  for (const url of SHELL_URLS.filter((u) => u.startsWith('/js/'))) {
    const text = readFileSync(join(WEB, url), 'utf8');
    for (const [, spec] of text.matchAll(/^import .* from '([^']+)';$/gm)) {
      const path = new URL(spec, `http://x${url}`).pathname;
      assert.ok(SHELL_URLS.includes(path), `${url} imports ${path}`);
    }
  }
});

test('showUrls adds the track and each segment, resolved against the manifest', () => {
  const manifest = { segments: [{ url: 'a-000.mp3' }, { url: 'a-001.mp3' }] };
  const urls = showUrls('https://show.example', '/tracks/a.json', manifest);
  assert.equal(urls.length, SHELL_URLS.length + 3);
  assert.deepEqual(urls.slice(-3), [
    'https://show.example/tracks/a.json', 'https://show.example/tracks/a-000.mp3', 'https://show.example/tracks/a-001.mp3',
  ]);
  assert.equal(urls[0], 'https://show.example/');
  assert.equal(showUrls('https://show.example', '/tracks/b.wav').at(-1), 'https://show.example/tracks/b.wav');
});

test('downloadedFraction is done/total, 0 with nothing to count', () => {
  assert.equal(downloadedFraction(0, 0), 0);
  assert.equal(downloadedFraction(3, 4), 0.75);
  assert.equal(downloadedFraction(5, 4), 1);
});

class FakeCache {
  constructor(held = []) {
    this.map = new Map(held.map((url) => [url, 'held']));
  }
  async match(url) {
    return this.map.get(url);
  }
  async put(url, response) {
    this.map.set(url, response);
  }
}

test('downloadAll fetches only what the cache lacks and reports progress after each file', async () => {
  const cache = new FakeCache(['u1']);
  const fetched = [];
  const progress = [];
  const fetchFn = async (url) => {
    fetched.push(url);
    return { ok: url !== 'u3', url };
  };
  const fraction = await downloadAll(cache, ['u1', 'u2', 'u3', 'u4'], fetchFn, (f) => progress.push(f));
  assert.deepEqual(fetched, ['u2', 'u3', 'u4']);
  assert.deepEqual(progress, [0, 0.25, 0.5, 0.5, 0.75]);
  assert.equal(fraction, 0.75);
  // Offline: nothing new, the held files still count.
  const again = await downloadAll(cache, ['u1', 'u2', 'u3', 'u4'], async () => { throw new TypeError('offline'); });
  assert.equal(again, 0.75);
});

test('progress counts bytes: segment sizes from the manifest, other files a nominal size', async () => {
  const manifest = { segments: [{ url: 's0.mp3', bytes: 240000 }, { url: 's1.mp3', bytes: 240000 }] };
  const sizes = showSizes('https://show.example', '/tracks/a.json', manifest);
  assert.deepEqual([...sizes.entries()], [
    ['https://show.example/tracks/s0.mp3', 240000], ['https://show.example/tracks/s1.mp3', 240000],
  ]);
  const urls = ['https://show.example/index.html', 'https://show.example/tracks/s0.mp3', 'https://show.example/tracks/s1.mp3'];
  const progress = [];
  const fraction = await downloadAll(new FakeCache([]), urls, async (url) => ({ ok: true, url }), (f) => progress.push(f), sizes);
  const total = UNKNOWN_FILE_BYTES + 480000;
  assert.deepEqual(progress, [0, UNKNOWN_FILE_BYTES / total, (UNKNOWN_FILE_BYTES + 240000) / total, 1]);
  assert.equal(fraction, 1);
  assert.equal(showSizes('https://show.example', '/tracks/b.wav').size, 0);
});

class FakeStorage {
  constructor() {
    this.items = new Map();
  }
  getItem(key) {
    return this.items.has(key) ? this.items.get(key) : null;
  }
  setItem(key, value) {
    this.items.set(key, String(value));
  }
}

test('a saved session comes back; a broken or partial one keeps only what is sound', () => {
  const storage = new FakeStorage();
  const session = {
    welcome: { type: 'welcome', track_url: '/tracks/a.json', group: 'a' },
    show: { title: 'T' },
    estimate: { at_us: 1, offset_us: -5, rate_ppm: 3.5, bound_us: 900, bound_growth_ppm: 2 },
    schedule: { epoch: 2, state: 'scheduled', start_us: 123 },
  };
  saveSession(storage, session);
  assert.deepEqual(loadSession(storage), session);
  assert.deepEqual(loadSession(storage, 1 + SESSION_MAX_AGE_US), session);
  assert.deepEqual(loadSession(storage, 2 + SESSION_MAX_AGE_US), { ...session, estimate: null });
  storage.setItem(SESSION_KEY, JSON.stringify({ ...session, estimate: { at_us: 1 }, schedule: { state: 'x' } }));
  assert.deepEqual(loadSession(storage), { ...session, estimate: null, schedule: null });
  storage.setItem(SESSION_KEY, '{not json');
  assert.equal(loadSession(storage), null);
  storage.setItem(SESSION_KEY, JSON.stringify({ estimate: session.estimate }));
  assert.equal(loadSession(storage), null);
  assert.equal(loadSession(new FakeStorage()), null);
  saveSession({ setItem() { throw new Error('quota'); } }, session); // ignored
});

test('the service worker uses the cache offline.js fills', async () => {
  const { OFFLINE_CACHE } = await import('../../clients/web/js/offline.js');
  const sw = readFileSync(join(WEB, 'sw.js'), 'utf8');
  assert.match(sw, new RegExp(`const OFFLINE_CACHE = '${OFFLINE_CACHE}';`));
});
