/**
 * Offline once ready: which files the show needs, downloading them into the
 * Cache API with progress, and keeping the last session (welcome, show,
 * estimate, schedule) so a page reloaded with no network can still play.
 *
 * The service worker (/sw.js) answers the page's requests from the same
 * cache (OFFLINE_CACHE) when the network fails. Nothing here touches the DOM;
 * the cache, fetch and storage come in as arguments, so Node tests drive it
 * with fakes. Nothing of this changes the wire protocol.
 */

// The one cache the page fills and the service worker reads. A new name
// (a new release of the page that needs a clean cache) makes the worker drop
// the others when it activates.
export const OFFLINE_CACHE = 'unisono-offline-v1';

// The participant page and every module it imports (a static import graph:
// tests/js/offline.test.mjs checks this list against clients/web).
export const SHELL_URLS = Object.freeze([
  '/',
  '/css/unisono.css',
  '/js/participant.js',
  '/js/audioclock.js',
  '/js/chain.js',
  '/js/cues.js',
  '/js/deviceclock.js',
  '/js/drift.js',
  '/js/net.js',
  '/js/offline.js',
  '/js/phone.js',
  '/js/player.js',
  '/js/protocol.js',
  '/js/schedule.js',
  '/js/segments.js',
  '/js/status.js',
  '/js/sync.js',
  '/vendor/msgpack/CachedKeyDecoder.mjs',
  '/vendor/msgpack/DecodeError.mjs',
  '/vendor/msgpack/Decoder.mjs',
  '/vendor/msgpack/Encoder.mjs',
  '/vendor/msgpack/ExtData.mjs',
  '/vendor/msgpack/ExtensionCodec.mjs',
  '/vendor/msgpack/context.mjs',
  '/vendor/msgpack/decode.mjs',
  '/vendor/msgpack/decodeAsync.mjs',
  '/vendor/msgpack/encode.mjs',
  '/vendor/msgpack/index.mjs',
  '/vendor/msgpack/timestamp.mjs',
  '/vendor/msgpack/utils/int.mjs',
  '/vendor/msgpack/utils/prettyByte.mjs',
  '/vendor/msgpack/utils/stream.mjs',
  '/vendor/msgpack/utils/typedArrays.mjs',
  '/vendor/msgpack/utils/utf8.mjs',
]);

// localStorage key of the last session (see saveSession).
export const SESSION_KEY = 'unisono.session';
// A kept estimate older than this is not used: the device clock
// (performance.timeOrigin + now) is only continuous across reloads as far as
// the system clock is, and a show lasts an hour or two.
export const SESSION_MAX_AGE_US = 12 * 3600 * 1e6;

/**
 * Every URL (absolute) the show needs offline: the page's shell, the track,
 * and, for a segment manifest, each segment (resolved against the manifest's URL).
 */
export function showUrls(origin, trackUrl, manifest = null) {
  const track = new URL(trackUrl, origin).href;
  const urls = SHELL_URLS.map((path) => new URL(path, origin).href);
  urls.push(track);
  if (manifest) for (const segment of manifest.segments) urls.push(new URL(segment.url, track).href);
  return [...new Set(urls)];
}

/**
 * The size in bytes of each file whose size is known before downloading it:
 * a segment manifest states every segment's. Progress counts bytes, so a
 * one-hour show does not read 50 % after its small page files.
 */
export function showSizes(origin, trackUrl, manifest = null) {
  const sizes = new Map();
  if (!manifest) return sizes;
  const track = new URL(trackUrl, origin).href;
  for (const segment of manifest.segments) {
    if (Number.isFinite(segment.bytes) && segment.bytes > 0) sizes.set(new URL(segment.url, track).href, segment.bytes);
  }
  return sizes;
}

// What a file of unknown size (the page, a module, the manifest) counts for, in bytes.
export const UNKNOWN_FILE_BYTES = 16 * 1024;

/** The fraction (0..1) of `total` held, `done` of it; 0 when there is nothing to count yet. */
export function downloadedFraction(done, total) {
  if (!(total > 0)) return 0;
  return Math.min(1, Math.max(0, done / total));
}

/**
 * Put every URL of `urls` into `cache` (a Cache: match/put) that it does not
 * hold yet, one at a time, calling onProgress(fraction) after each. `fetchFn`
 * is fetch. The fraction counts bytes: `sizes` (see showSizes) gives the known
 * ones, any other file counts UNKNOWN_FILE_BYTES. Resolves to the fraction
 * held at the end (1 when all succeeded); a failed file is skipped (the next
 * call tries it again).
 */
export async function downloadAll(cache, urls, fetchFn, onProgress = () => {}, sizes = new Map()) {
  const weight = (url) => sizes.get(url) ?? UNKNOWN_FILE_BYTES;
  const total = urls.reduce((sum, url) => sum + weight(url), 0);
  let done = 0;
  onProgress(downloadedFraction(done, total));
  for (const url of urls) {
    let held = (await cache.match(url)) !== undefined;
    if (!held) {
      try {
        const response = await fetchFn(url, { cache: 'no-cache' });
        if (response.ok) {
          await cache.put(url, response);
          held = true;
        }
      } catch {
        // Offline or the server gone: counted as missing, tried again next time.
      }
    }
    if (held) done += weight(url);
    onProgress(downloadedFraction(done, total));
  }
  return downloadedFraction(done, total);
}

/**
 * Keep the session's latest messages in `storage` (localStorage): `session`
 * is {welcome, show, estimate, schedule} (the decoded messages, any may be
 * null). A full or refusing storage is ignored: it only costs the offline reload.
 */
export function saveSession(storage, session) {
  try {
    storage?.setItem(SESSION_KEY, JSON.stringify(session));
  } catch {
    // Private mode or a full quota.
  }
}

/**
 * The session kept by saveSession, or null if none or unreadable. Only a
 * session with a welcome counts; its estimate, when there is one, carries
 * its own at_us, so its bound keeps growing by bound_growth_ppm from there;
 * given `nowUs` (device time), an estimate older than SESSION_MAX_AGE_US is dropped.
 */
export function loadSession(storage, nowUs = null) {
  let session;
  try {
    session = JSON.parse(storage?.getItem(SESSION_KEY) ?? 'null');
  } catch {
    return null;
  }
  if (session === null || typeof session !== 'object' || typeof session.welcome?.track_url !== 'string') return null;
  const estimate = session.estimate;
  const estimateOk = estimate != null && ['at_us', 'offset_us', 'rate_ppm', 'bound_us', 'bound_growth_ppm'].every((k) => Number.isFinite(estimate[k]))
    && (nowUs === null || Math.abs(nowUs - estimate.at_us) <= SESSION_MAX_AGE_US);
  const schedule = session.schedule;
  const scheduleOk = schedule != null && Number.isInteger(schedule.epoch) && typeof schedule.state === 'string';
  return {
    welcome: session.welcome,
    show: session.show ?? null,
    estimate: estimateOk ? estimate : null,
    schedule: scheduleOk ? schedule : null,
  };
}
