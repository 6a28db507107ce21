/**
 * The organizer console: `hello` with the URL's token, then the live
 * `overview`; start with a lead time, abort, announce. Glue only: the protocol is protocol.js's.
 */

import { ReconnectingSocket, socketUrl, PERMANENT_ERRORS } from './net.js';
import { decode, encode, ProtocolError, PROTOCOL_VERSION, SERVER_TO_ORGANIZER } from './protocol.js';
import { countdownText } from './status.js';
import { perfNowMs } from './deviceclock.js';

const REDRAW_INTERVAL_MS = 200;

const token = new URLSearchParams(location.search).get('token') ?? '';
const view = {
  state: document.getElementById('state'),
  countdown: document.getElementById('countdown'),
  devices: document.getElementById('devices'),
  loaded: document.getElementById('loaded'),
  unlocked: document.getElementById('unlocked'),
  synced: document.getElementById('synced'),
  groups: document.getElementById('groups'),
  lead: document.getElementById('lead'),
  start: document.getElementById('start'),
  abort: document.getElementById('abort'),
  error: document.getElementById('error'),
  connection: document.getElementById('connection'),
  announceForm: document.getElementById('announce-form'),
  announceText: document.getElementById('announce-text'),
  announceSent: document.getElementById('announce-sent'),
};

// announce.text's limit (protocol.js, messages.py MAX_ANNOUNCEMENT_TEXT), in characters.
const MAX_ANNOUNCEMENT_CHARS = 500;

let overview = null;
let overviewAtMs = 0; // perfNowMs() when the overview arrived, to run the countdown between overviews

const socket = new ReconnectingSocket(socketUrl(location, '/ws/organizer'), {
  onOpen: () => {
    socket.send(encode({ type: 'hello', v: PROTOCOL_VERSION, token }));
    view.connection.textContent = 'connected';
  },
  onMessage: receive,
  onClose: (event) => {
    view.connection.textContent = socket.stopped ? `closed: ${event.reason || event.code}` : 'connection lost, reconnecting…';
  },
});

function showError(text) {
  view.error.textContent = text;
  view.error.hidden = !text;
}

function receive(event) {
  let message;
  try {
    message = decode(event.data, { accept: SERVER_TO_ORGANIZER });
  } catch (error) {
    if (!(error instanceof ProtocolError)) throw error;
    console.warn('dropped a bad message from the server:', error.message);
    return;
  }
  if (message.type === 'error') {
    showError(`${message.message} (${message.code})`);
    if (PERMANENT_ERRORS.has(message.code)) socket.stop();
    return;
  }
  overview = message;
  overviewAtMs = perfNowMs();
  render();
}

function render() {
  if (!overview) return;
  view.state.textContent = overview.state;
  view.devices.textContent = String(overview.devices);
  view.loaded.textContent = String(overview.loaded);
  view.unlocked.textContent = String(overview.unlocked);
  view.synced.textContent = String(overview.synced);
  const rows = Object.entries(overview.groups).map(([group, count]) => {
    const row = document.createElement('tr');
    const name = document.createElement('td');
    const value = document.createElement('td');
    name.textContent = group;
    value.textContent = String(count);
    row.append(name, value);
    return row;
  });
  view.groups.replaceChildren(...rows);
  view.start.disabled = !(overview.state === 'idle' || overview.state === 'ended');
  view.abort.disabled = !(overview.state === 'scheduled' || overview.state === 'playing');
  view.countdown.textContent = countdown();
}

function countdown() {
  if (overview.start_us == null || overview.state !== 'scheduled') return '';
  const serverNowUs = overview.server_us + (perfNowMs() - overviewAtMs) * 1000;
  return `starts in ${countdownText((overview.start_us - serverNowUs) / 1e6)}`;
}

view.start.addEventListener('click', () => {
  const leadS = Number(view.lead.value);
  const leadMs = Math.round(leadS * 1000);
  if (!Number.isFinite(leadS) || leadMs < 1000 || leadMs > 86400000) {
    showError('The lead time must be between 1 second and 24 hours.');
    return;
  }
  showError('');
  if (!socket.send(encode({ type: 'start', lead_ms: leadMs }))) showError('Not connected: the start was not sent.');
});

view.abort.addEventListener('click', () => {
  showError('');
  if (!socket.send(encode({ type: 'abort' }))) showError('Not connected: the abort was not sent.');
});

view.announceForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = view.announceText.value.trim();
  if (Array.from(text).length > MAX_ANNOUNCEMENT_CHARS) {
    showError(`An announcement holds at most ${MAX_ANNOUNCEMENT_CHARS} characters.`);
    return;
  }
  showError('');
  if (!socket.send(encode({ type: 'announce', text }))) {
    showError('Not connected: the announcement was not sent.');
    return;
  }
  view.announceSent.textContent = text ? `sent at ${new Date().toLocaleTimeString()}` : 'announcement cleared';
});

if (!token) showError('No organizer token in the address: open the organizer link printed by `unisono serve`.');
setInterval(render, REDRAW_INTERVAL_MS);
socket.connect();
