/**
 * The participant page: wires the link (net.js), the player (player.js), the
 * cue timer (cues.js) and the view. Exposes `window.unisono`, a plain object
 * kept current, which the browser tests read.
 */

import { ParticipantLink, socketUrl } from './net.js';
import { Player } from './player.js';
import { ClockEstimate } from './sync.js';
import { latestSchedule } from './schedule.js';
import { participantState, syncText, countdownText, pageLanguage, TEXTS } from './status.js';
import { CueTimer, textColourOn } from './cues.js';
import { deviceNowUs } from './deviceclock.js';
import { PROTOCOL_VERSION } from './protocol.js';
import { OFFLINE_CACHE, downloadAll, loadSession, saveSession, showSizes, showUrls } from './offline.js';
import { loadManualLatencyMs, saveManualLatencyMs, wakeLockWanted } from './phone.js';
import { fetchManifest } from './chain.js';
import { checkManifest, isManifestUrl } from './segments.js';

// Test only: a shifted, skewed clock (testclock.js), installed before any
// clock is read; fetched only when the URL asks for it.
if (new URLSearchParams(globalThis.location?.search ?? '').has('testclock')) {
  const { parseTestClock, installTestClock } = await import('./testclock.js');
  const testClock = parseTestClock(location.search);
  if (testClock !== null) installTestClock(testClock);
}

// The view is redrawn this often for the countdown and the sync bound.
const REDRAW_INTERVAL_MS = 200;
// How long a cue's colour fills the screen.
const FLASH_MS = 1000;
// A download that left files missing (the network came and went) tries again after this.
const DOWNLOAD_RETRY_MS = 10000;

const lang = pageLanguage(globalThis.navigator?.language);
const texts = TEXTS[lang];
document.documentElement.lang = lang;

const hook = {
  state: 'connecting',
  deviceId: null,
  group: null,
  title: null,
  estimate: null,
  schedule: null,
  start: null,
  loaded: false,
  unlocked: false,
  connected: false,
  boundUs: null,
  drift: null, // {errorMs (played - target, null until measured), ratePpm, rateEstimatePpm, realigns}
  error: null,
  lang,
  show: null, // the `show` message: title, when, where, bring, about, cues
  cue: null, // the cue whose text shows now, or null
  cues: [], // every cue fired: {index, firedDeviceUs, dueDeviceUs} (device time, µs)
  announcements: [], // every announcement received: {text, at_us}
  downloaded: 0, // fraction of the show's files in the offline cache (offline.js), null without Cache API
  offlineReady: false, // a service worker controls the page (it can load with no network)
  restored: false, // the page started from the session kept in localStorage (offline.js)
  wakeLock: false, // a screen wake lock is held
  visible: true,
  latencyMs: 0, // the participant's manual latency adjustment (phone.js)
  outputLatencyUs: null, // the latency compensated (reported + manual), as ready reports it
  contextRealigns: 0, // restarts after the AudioContext came back from suspended/interrupted
  audioClock: null, // how the audio clock is mapped (player.audioClockStatus): source, latencyS, latencyKnown, residualMs
};
window.unisono = hook;

const facts = { joined: false, everStarted: false, error: null };
let clock = null;
// The latest welcome, show, estimate and schedule, kept for an offline reload (offline.js).
const session = { welcome: null, show: null, estimate: null, schedule: null };
let downloading = null; // the track URL whose download runs
let wakeLock = null; // the WakeLockSentinel held, or null
let wakeLockPending = false;

const view = {
  title: document.getElementById('title'),
  group: document.getElementById('group'),
  sync: document.getElementById('sync'),
  status: document.getElementById('status'),
  countdown: document.getElementById('countdown'),
  unlock: document.getElementById('unlock'),
  error: document.getElementById('error'),
  connection: document.getElementById('connection'),
  cue: document.getElementById('cue'),
  announcement: document.getElementById('announcement'),
  announcementLabel: document.getElementById('announcement-label'),
  announcementText: document.getElementById('announcement-text'),
  about: document.getElementById('about'),
  aboutText: document.getElementById('about-text'),
  whenLabel: document.getElementById('when-label'),
  when: document.getElementById('when'),
  whereLabel: document.getElementById('where-label'),
  where: document.getElementById('where'),
  bringLabel: document.getElementById('bring-label'),
  bring: document.getElementById('bring'),
  download: document.getElementById('download'),
  downloadLabel: document.getElementById('download-label'),
  downloadBar: document.getElementById('download-bar'),
  downloadPercent: document.getElementById('download-percent'),
  latency: document.getElementById('latency'),
  latencyLabel: document.getElementById('latency-label'),
};

const cueTimer = new CueTimer();
let cueTimeout = null;
let currentCue = -1;
let flashTimeout = null;

const player = new Player({ onChange: render });

const link = new ParticipantLink(socketUrl(location, '/ws'), {
  storage: globalThis.localStorage,
  lang: globalThis.navigator?.language,
  onMessage: receive,
  onConnection: (connected) => {
    hook.connected = connected;
    render();
  },
  onBadMessage: (error) => console.warn('dropped a bad message from the server:', error.message),
});

function fail(text) {
  facts.error = text;
  render();
}

function receive(message) {
  switch (message.type) {
    case 'welcome':
      if (message.v !== PROTOCOL_VERSION) {
        fail(`The server speaks protocol version ${message.v}; this page speaks ${PROTOCOL_VERSION}. Reload the page.`);
        return;
      }
      facts.joined = true;
      facts.error = null; // a fresh session: an earlier error (and a failed load) get another chance
      hook.deviceId = message.device_id;
      hook.group = message.group;
      hook.title = message.title;
      session.welcome = message;
      player.load(new URL(message.track_url, location.origin).href).catch((error) => fail(`The track could not be loaded: ${error.message}`));
      downloadShow(message.track_url);
      break;
    case 'show':
      hook.show = message;
      session.show = message;
      cueTimer.setCues(message.cues);
      tickCues();
      break;
    case 'announcement':
      hook.announcements.push({ text: message.text, at_us: message.at_us });
      break;
    case 'estimate':
      hook.estimate = message;
      session.estimate = message;
      clock = new ClockEstimate(message);
      player.setEstimate(message);
      tickCues();
      break;
    case 'schedule': {
      const schedule = latestSchedule(hook.schedule, message);
      if (schedule !== message) return;
      hook.schedule = message;
      session.schedule = message;
      if (message.state === 'scheduled' || message.state === 'playing') facts.everStarted = true;
      player.setSchedule(message);
      tickCues();
      break;
    }
    case 'error':
      fail(`${message.message} (${message.code})`);
      break;
    default:
      break;
  }
  if (['welcome', 'show', 'estimate', 'schedule'].includes(message.type)) saveSession(globalThis.localStorage, session);
  render();
}

/**
 * Put the page, its modules, the track or manifest and every segment into the
 * offline cache, with progress; again later if some file could not be had.
 */
async function downloadShow(trackUrl) {
  if (downloading === trackUrl) return;
  if (!globalThis.caches) {
    hook.downloaded = null;
    return;
  }
  downloading = trackUrl;
  let fraction = 0;
  try {
    const cache = await caches.open(OFFLINE_CACHE);
    const url = new URL(trackUrl, location.origin).href;
    let manifest = null;
    if (isManifestUrl(url)) {
      try {
        manifest = await fetchManifest(url);
      } catch {
        const held = await cache.match(url);
        if (held) manifest = checkManifest(await held.json());
      }
    }
    const urls = showUrls(location.origin, trackUrl, manifest);
    // Without its manifest a segmented track's segments are still unknown: not done yet.
    const cap = manifest === null && isManifestUrl(url) ? 0.99 : 1;
    const sizes = showSizes(location.origin, trackUrl, manifest);
    fraction = Math.min(cap, await downloadAll(cache, urls, fetch, (value) => {
      hook.downloaded = Math.min(cap, value);
      render();
    }, sizes));
  } catch (error) {
    console.warn(`offline download: ${error.message}`);
  } finally {
    downloading = null;
  }
  if (fraction < 1) setTimeout(() => downloadShow(trackUrl), DOWNLOAD_RETRY_MS);
}

/** Fire the cues that are due, then set a timer for the next check (cues.js decides when). */
function tickCues() {
  if (cueTimeout !== null) clearTimeout(cueTimeout);
  cueTimeout = null;
  const result = cueTimer.update(hook.schedule, clock, deviceNowUs());
  for (const { index, cue, dueUs } of result.fire) {
    hook.cues.push({ index, firedDeviceUs: deviceNowUs(), dueDeviceUs: Math.round(dueUs) });
    fireCue(cue);
  }
  if (result.current !== currentCue) {
    currentCue = result.current;
    render();
  }
  if (result.waitMs !== null) cueTimeout = setTimeout(tickCues, result.waitMs);
}

function fireCue(cue) {
  if (cue.colour) flash(cue.colour);
  if (cue.vibrate && typeof navigator.vibrate === 'function') {
    try {
      navigator.vibrate(cue.vibrate);
    } catch {
      // Vibration is a bonus: some browsers refuse it without a recent tap.
    }
  }
}

function flash(colour) {
  const style = document.body.style;
  style.backgroundColor = colour;
  style.color = textColourOn(colour);
  if (flashTimeout !== null) clearTimeout(flashTimeout);
  flashTimeout = setTimeout(() => {
    style.backgroundColor = '';
    style.color = '';
    flashTimeout = null;
  }, FLASH_MS);
}

/** iOS: play through the mute switch (Safari 16.4+); elsewhere the property does not exist. */
function setPlaybackSession() {
  try {
    if (globalThis.navigator?.audioSession) navigator.audioSession.type = 'playback';
  } catch {
    // Not settable here: nothing to do.
  }
}

/** Hold the screen awake during the show while visible (phone.js decides); the browser drops it when hidden. */
function updateWakeLock() {
  const wanted = wakeLockWanted({ state: hook.state, visible: hook.visible });
  if (wanted && wakeLock === null && !wakeLockPending && globalThis.navigator?.wakeLock) {
    wakeLockPending = true;
    navigator.wakeLock.request('screen').then((sentinel) => {
      wakeLock = sentinel;
      sentinel.addEventListener('release', () => {
        if (wakeLock === sentinel) wakeLock = null;
        render();
      });
    }).catch((error) => console.warn(`wake lock: ${error.message}`)).finally(() => {
      wakeLockPending = false;
      render();
    });
  } else if (!wanted && wakeLock !== null) {
    const sentinel = wakeLock;
    wakeLock = null;
    sentinel.release().catch(() => {});
  }
}

function onVisibilityChange() {
  hook.visible = document.visibilityState === 'visible';
  player.resumeIfNeeded(hook.visible);
  render();
}

function onLatencyChange() {
  hook.latencyMs = saveManualLatencyMs(globalThis.localStorage, view.latency.value);
  view.latency.value = String(hook.latencyMs);
  player.setManualLatencyS(hook.latencyMs / 1000);
  render();
}

function onUnlockTap() {
  setPlaybackSession();
  try {
    player.unlock().catch((error) => fail(`Sound could not be enabled: ${error.message}`));
  } catch (error) {
    fail(`Sound could not be enabled: ${error.message}`);
  }
  render();
}

function render() {
  hook.loaded = player.loaded;
  hook.unlocked = player.unlocked;
  hook.start = player.start ? { ...player.start } : null;
  hook.drift = player.driftStatus();
  hook.contextRealigns = player.realigns;
  hook.audioClock = player.audioClockStatus();
  hook.error = facts.error;
  hook.state = participantState({
    ...facts,
    loaded: player.loaded,
    unlocked: player.unlocked,
    schedule: hook.schedule,
    start: player.start,
    audioNowS: player.audioNowS(),
    trackEnded: player.trackEnded,
  });
  const nowUs = deviceNowUs();
  hook.boundUs = clock ? Math.round(clock.boundAt(nowUs)) : null;
  const latencyS = player.outputLatencyS();
  hook.outputLatencyUs = latencyS === null ? null : Math.round(latencyS * 1e6);
  hook.visible = document.visibilityState === 'visible';
  updateWakeLock();
  hook.wakeLock = wakeLock !== null;
  hook.offlineReady = Boolean(globalThis.navigator?.serviceWorker?.controller);
  link.setReadiness({
    loaded: hook.loaded,
    unlocked: hook.unlocked,
    downloaded: hook.downloaded,
    bound_us: hook.boundUs,
    output_latency_us: hook.outputLatencyUs,
    wake_lock: hook.wakeLock,
    visible: hook.visible,
  });
  view.title.textContent = hook.show?.title ?? hook.title ?? 'Unisono';
  view.group.textContent = hook.group ? `${texts.group}: ${hook.group}` : '';
  view.sync.textContent = syncText(hook.boundUs);
  view.status.textContent = texts.status[hook.state];
  view.status.dataset.state = hook.state;
  view.unlock.hidden = hook.unlocked || hook.state === 'ended' || hook.state === 'error';
  view.error.textContent = facts.error ?? '';
  view.error.hidden = !facts.error;
  view.connection.textContent = hook.connected ? '' : facts.joined ? texts.connectionLost : '';
  view.countdown.textContent = countdown(nowUs);
  renderDownload();
  renderShow();
}

function renderDownload() {
  const fraction = hook.downloaded;
  view.download.hidden = fraction === null || !facts.joined;
  const percent = Math.floor((fraction ?? 0) * 100);
  view.downloadBar.value = percent;
  view.downloadPercent.textContent = `${percent} %`;
  view.downloadLabel.textContent = percent >= 100 ? texts.downloaded : texts.downloading;
  view.latencyLabel.textContent = texts.latency;
}

/** The explanation before the show, the current cue during it, and the latest announcement. */
function renderShow() {
  const inShow = hook.state === 'scheduled' || hook.state === 'playing';
  const cue = inShow && currentCue >= 0 ? cueTimer.cues[currentCue] : null;
  hook.cue = cue;
  view.cue.textContent = cue?.text ?? '';
  view.cue.hidden = !cue?.text;
  const show = hook.show;
  // The explanation is for before the show: hidden once it has begun (cues take its place).
  const begun = ['playing', 'ended'].includes(hook.state) || ['playing', 'ended'].includes(hook.schedule?.state);
  view.about.hidden = !show || begun;
  if (show) {
    view.aboutText.textContent = show.about;
    for (const key of ['when', 'where', 'bring']) {
      view[`${key}Label`].textContent = texts[key];
      view[key].textContent = show[key];
      view[key].parentElement.hidden = !show[key];
    }
  }
  const latest = hook.announcements[hook.announcements.length - 1];
  view.announcementLabel.textContent = texts.announcement;
  view.announcementText.textContent = latest?.text ?? '';
  view.announcement.hidden = !latest?.text;
}

function countdown(nowUs) {
  const schedule = hook.schedule;
  if (!clock || !schedule || schedule.start_us == null || hook.state !== 'scheduled') return '';
  const remainingS = (clock.serverToDevice(schedule.start_us) - nowUs) / 1e6;
  if (remainingS <= 0) return '';
  const hint = hook.unlocked ? '' : texts.tapHint;
  return `${texts.startsIn} ${countdownText(remainingS)}${hint}`;
}

/**
 * The last session kept in localStorage, replayed as if it had just arrived:
 * with no network, a reloaded page still knows its track, the schedule and an
 * estimate (whose bound grows from its at_us), and can play from the cache.
 * Fresher messages from the server replace them as usual.
 */
function restoreSession() {
  const saved = loadSession(globalThis.localStorage, deviceNowUs());
  if (saved === null) return;
  hook.restored = true;
  for (const message of [saved.welcome, saved.show, saved.estimate, saved.schedule]) if (message) receive(message);
}

view.unlock.addEventListener('click', onUnlockTap);
view.latency.addEventListener('change', onLatencyChange);
document.addEventListener('visibilitychange', onVisibilityChange);
globalThis.navigator?.serviceWorker?.addEventListener('controllerchange', render);
if (globalThis.navigator?.serviceWorker) {
  navigator.serviceWorker.register('/sw.js').catch((error) => console.warn(`service worker: ${error.message}`));
}
setPlaybackSession();
hook.latencyMs = loadManualLatencyMs(globalThis.localStorage);
view.latency.value = String(hook.latencyMs);
player.setManualLatencyS(hook.latencyMs / 1000);
restoreSession();
setInterval(() => {
  player.resumeIfNeeded(hook.visible); // a call or notification ended: get the audio back
  player.correctDrift();
  render();
}, REDRAW_INTERVAL_MS);
render();
link.start();
