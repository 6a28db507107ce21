/*
 * The participant page's service worker: serves the page, its modules and the
 * show's track files from the cache the page fills (js/offline.js) whenever
 * the network cannot answer, so a page that downloaded the show loads and
 * plays with no network at all.
 *
 * Served from the root (/sw.js, no-cache) so its scope is the whole site. A
 * classic script (not a module) so that every browser with service workers
 * runs it. The cache name must equal offline.js's OFFLINE_CACHE
 * (tests/js/offline.test.mjs checks it).
 */

const OFFLINE_CACHE = 'unisono-offline-v1';
// The page and its modules come from the network first, so a new release
// shows at the next load; on a crowd's collapsed network a request can hang
// for a long time, so after this the cached copy answers instead.
const NETWORK_TIMEOUT_MS = 3000;

self.addEventListener('install', (event) => {
  event.waitUntil(self.skipWaiting());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith('unisono-offline-') && name !== OFFLINE_CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET' || request.headers.has('range')) return; // the cache holds whole responses only
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (url.pathname === '/sw.js' || url.pathname.startsWith('/ws') || url.pathname === '/healthz') return;
  // Track files never change under the same name (server/app.py): the cache answers first.
  if (url.pathname.startsWith('/tracks/')) event.respondWith(cacheFirst(request, url));
  else event.respondWith(networkFirst(request, url));
});

/** The cache key: the URL without its query (`/?lang=fr` is the page `/`). */
function keyOf(url) {
  return url.origin + url.pathname;
}

async function cacheFirst(request, url) {
  const cache = await caches.open(OFFLINE_CACHE);
  const held = await cache.match(keyOf(url));
  if (held) return held;
  return fetch(request);
}

async function networkFirst(request, url) {
  const cache = await caches.open(OFFLINE_CACHE);
  const key = keyOf(url);
  const network = fetch(request).then(async (response) => {
    // Keep the cached copy current, but only of files the page cached itself.
    if (response.ok && response.type === 'basic' && (await cache.match(key))) await cache.put(key, response.clone());
    return response;
  });
  const timeout = new Promise((resolve) => setTimeout(resolve, NETWORK_TIMEOUT_MS, null));
  try {
    const first = await Promise.race([network, timeout]);
    if (first) return first;
  } catch {
    // The network failed: the cache answers.
  }
  const held = await cache.match(key);
  if (held) return held;
  return network; // nothing cached: wait for the network, or fail as it fails
}
