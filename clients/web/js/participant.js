/**
 * The participant page: wires the link (net.js), the player (player.js) and
 * the view. Exposes `window.unisono`, a plain object kept current, which the
 * browser tests read.
 */

import { ParticipantLink, socketUrl } from './net.js';
import { Player } from './player.js';
import { ClockEstimate } from './sync.js';
import { latestSchedule } from './schedule.js';
import { participantState, syncText, countdownText } from './status.js';
import { deviceNowUs } from './deviceclock.js';
import { PROTOCOL_VERSION } from './protocol.js';

// The view is redrawn this often for the countdown and the sync bound.
const REDRAW_INTERVAL_MS = 200;

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
};
window.unisono = hook;

const facts = { joined: false, everStarted: false, error: null };
let clock = null;

const view = {
  title: document.getElementById('title'),
  group: document.getElementById('group'),
  sync: document.getElementById('sync'),
  status: document.getElementById('status'),
  countdown: document.getElementById('countdown'),
  unlock: document.getElementById('unlock'),
  error: document.getElementById('error'),
  connection: document.getElementById('connection'),
};

const player = new Player({ onChange: render });

const link = new ParticipantLink(socketUrl(location, '/ws'), {
  storage: globalThis.localStorage,
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
      player.load(new URL(message.track_url, location.origin).href).catch((error) => fail(`The track could not be loaded: ${error.message}`));
      break;
    case 'estimate':
      hook.estimate = message;
      clock = new ClockEstimate(message);
      player.setEstimate(message);
      break;
    case 'schedule': {
      const schedule = latestSchedule(hook.schedule, message);
      if (schedule !== message) return;
      hook.schedule = message;
      if (message.state === 'scheduled' || message.state === 'playing') facts.everStarted = true;
      player.setSchedule(message);
      break;
    }
    case 'error':
      fail(`${message.message} (${message.code})`);
      break;
    default:
      break;
  }
  render();
}

function onUnlockTap() {
  try {
    player.unlock().catch((error) => fail(`Sound could not be enabled: ${error.message}`));
  } catch (error) {
    fail(`Sound could not be enabled: ${error.message}`);
  }
  render();
}

const STATUS_TEXT = {
  connecting: 'Connecting…',
  joined: 'Loading the track…',
  loaded: 'Track ready. Tap to enable sound.',
  unlocked: 'Ready. Waiting for the start.',
  scheduled: 'Starting soon',
  playing: 'Playing',
  idle: 'Stopped by the organizer. Waiting for a new start.',
  ended: 'The show is over. Thank you!',
  error: 'Something went wrong',
};

function render() {
  hook.loaded = player.loaded;
  hook.unlocked = player.unlocked;
  hook.start = player.start ? { ...player.start } : null;
  hook.drift = player.driftStatus();
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
  link.setReadiness({ loaded: hook.loaded, unlocked: hook.unlocked });

  const nowUs = deviceNowUs();
  hook.boundUs = clock ? Math.round(clock.boundAt(nowUs)) : null;
  view.title.textContent = hook.title ?? 'Unisono';
  view.group.textContent = hook.group ? `Group: ${hook.group}` : '';
  view.sync.textContent = syncText(hook.boundUs);
  view.status.textContent = STATUS_TEXT[hook.state];
  view.status.dataset.state = hook.state;
  view.unlock.hidden = hook.unlocked || hook.state === 'ended' || hook.state === 'error';
  view.error.textContent = facts.error ?? '';
  view.error.hidden = !facts.error;
  view.connection.textContent = hook.connected ? '' : facts.joined ? 'Connection lost, reconnecting… (the show continues)' : '';
  view.countdown.textContent = countdown(nowUs);
}

function countdown(nowUs) {
  const schedule = hook.schedule;
  if (!clock || !schedule || schedule.start_us == null || hook.state !== 'scheduled') return '';
  const remainingS = (clock.serverToDevice(schedule.start_us) - nowUs) / 1e6;
  if (remainingS <= 0) return '';
  const hint = hook.unlocked ? '' : ' (tap the button to hear it)';
  return `Starts in ${countdownText(remainingS)}${hint}`;
}

view.unlock.addEventListener('click', onUnlockTap);
setInterval(() => {
  player.correctDrift();
  render();
}, REDRAW_INTERVAL_MS);
render();
link.start();
