/**
 * The organizer console (glue): `hello` with the URL's token on /ws/organizer,
 * then draw each `overview`'s status document; every command goes through
 * the HTTP API (PROTOCOL.md section 7, server/openapi.py). What to show and
 * what to send is console.js's; this file reads the DOM, the clocks and the
 * network.
 */

import { ReconnectingSocket, socketUrl, PERMANENT_ERRORS } from './net.js';
import { decode, encode, ProtocolError, PROTOCOL_VERSION, SERVER_TO_ORGANIZER } from './protocol.js';
import { perfNowMs } from './deviceclock.js';
import {
  apiOutcome, clockLines, clockPart, consoleLanguage, controlsFor, countdownLine, FUNNEL_STAGES, formatLead, formatMs,
  funnelRows, histogramBars, leadSeconds, nextLocalTime, readyPercents, TEXTS,
} from './console.js';

// The countdown's redraw interval: a tenth of its one-second resolution would be wasted work.
const REDRAW_INTERVAL_MS = 200;
// The API knows the console by this name in the event log (X-Unisono-Client).
const CLIENT_NAME = 'console';

const lang = consoleLanguage(globalThis.navigator?.language);
const texts = TEXTS[lang];
document.documentElement.lang = lang;
document.title = texts.title;
for (const element of document.querySelectorAll('[data-t]')) element.textContent = texts[element.dataset.t];

const token = new URLSearchParams(location.search).get('token') ?? '';
const $ = (id) => document.getElementById(id);
const view = {
  showTitle: $('show-title'), connection: $('connection'), error: $('error'), phones: $('phones'),
  state: $('state'), countdown: $('countdown'), startTime: $('start-time'),
  lead: $('lead'), start: $('start'), reschedule: $('reschedule'), leadMin: $('lead-min'),
  at: $('at'), startAt: $('start-at'), rescheduleAt: $('reschedule-at'),
  localTz: $('local-tz'), serverTz: $('server-tz'), atPreview: $('at-preview'), abort: $('abort'),
  announceForm: $('announce-form'), announceText: $('announce-text'), announceSent: $('announce-sent'),
  devices: $('devices'), readyShare: $('ready-share'), funnelHead: $('funnel-head'), funnel: $('funnel'),
  bounds: $('bounds'), laggards: $('laggards'), clock: $('clock'), events: $('events'),
  joinQr: $('join-qr'), joinUrl: $('join-url'),
  dialog: $('confirm-dialog'), confirmMessage: $('confirm-message'), confirmYes: $('confirm-yes'), confirmNo: $('confirm-no'),
};
view.announceText.placeholder = texts.announcePlaceholder;
view.joinQr.alt = texts.joinAlt;
view.localTz.textContent = Intl.DateTimeFormat().resolvedOptions().timeZone ?? '';
view.funnelHead.replaceChildren(cell('th', texts.group), ...FUNNEL_STAGES.map((stage) => cell('th', texts.stages[stage])));

let overview = null;
let overviewAtMs = 0; // perfNowMs() when the overview arrived: the countdown runs on between overviews
let pendingConfirm = null; // the request to resend with confirm: true if the organizer agrees

const socket = new ReconnectingSocket(socketUrl(location, '/ws/organizer'), {
  onOpen: () => {
    socket.send(encode({ type: 'hello', v: PROTOCOL_VERSION, token }));
    view.connection.textContent = texts.connected;
  },
  onMessage: receive,
  onClose: (event) => {
    view.connection.textContent = socket.stopped ? `${texts.closed}: ${event.reason || event.code}` : texts.reconnecting;
  },
});

function cell(tag, text, className) {
  const element = document.createElement(tag);
  element.textContent = text;
  if (className) element.className = className;
  return element;
}

function row(values, tag = 'td') {
  const tr = document.createElement('tr');
  tr.append(...values.map((value) => cell(tag, value)));
  return tr;
}

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

function serverNowUs() {
  return overview.server_us + (perfNowMs() - overviewAtMs) * 1000;
}

function render() {
  if (!overview) return;
  const status = overview.status ?? null;
  const show = { state: overview.state, start_us: overview.start_us };
  view.state.textContent = texts.states[show.state] ?? show.state;
  view.state.dataset.state = show.state;
  view.devices.textContent = String(overview.devices);
  const allowed = controlsFor(show.state);
  view.start.disabled = view.startAt.disabled = !allowed.start;
  view.reschedule.disabled = view.rescheduleAt.disabled = !allowed.reschedule;
  view.abort.disabled = !allowed.abort;
  renderCountdown();
  renderAtPreview();
  if (status) renderStatus(status);
}

function renderCountdown() {
  const show = { state: overview.state, start_us: overview.start_us };
  const line = countdownLine(show, serverNowUs(), texts);
  if (view.countdown.textContent !== line) view.countdown.textContent = line;
}

function renderStatus(status) {
  view.showTitle.textContent = status.title;
  view.startTime.textContent = status.show?.start_time ? `T = ${clockPart(status.show.start_time)}` : '';
  view.serverTz.textContent = status.timezone;
  view.leadMin.textContent = formatLead(status.lead_min_ms);
  // No public URL configured: participants open this server's address, as /join.svg encodes it.
  const joinUrl = status.join_url || `${location.origin}/`;
  if (view.joinUrl.textContent !== joinUrl) {
    view.joinUrl.textContent = joinUrl;
    view.joinUrl.href = joinUrl;
  }

  view.readyShare.textContent = texts.readyShare(...readyPercents(status));
  view.phones.textContent = status.phones ? texts.phones(status.phones) : '';
  view.funnel.replaceChildren(...funnelRows(status).map((line) => {
    const tr = document.createElement('tr');
    if (line.total) tr.className = 'total';
    tr.append(cell('th', line.total ? texts.total : line.name));
    for (const stage of FUNNEL_STAGES) {
      const td = cell('td', String(line.counts[stage]));
      td.dataset.stage = stage;
      td.style.setProperty('--share', String(line.shares[stage]));
      tr.append(td);
    }
    return tr;
  }));

  view.bounds.replaceChildren(...histogramBars(status.bounds, texts).map((bar) => {
    const item = document.createElement('div');
    item.className = `bar${bar.over ? ' over' : ''}${bar.unknown ? ' unknown' : ''}`;
    item.setAttribute('role', 'listitem');
    item.style.setProperty('--fraction', String(bar.fraction));
    item.append(cell('span', String(bar.count), 'count'), cell('span', '', 'fill'), cell('span', bar.label, 'label'));
    return item;
  }));

  const laggards = status.laggards ?? [];
  view.laggards.replaceChildren(...(laggards.length === 0
    ? [row([texts.noLaggards])]
    : laggards.map((l) => row([l.device, l.group, formatMs(l.bound_ms), formatMs(l.rtt_ms), l.reason]))));

  view.clock.replaceChildren(...clockLines(status, texts).flatMap(([label, value]) => [cell('dt', label), cell('dd', value)]));

  const events = [...(status.events ?? [])].reverse(); // newest first
  view.events.replaceChildren(...events.map((e) => row([clockPart(e.time), e.who, e.action, e.detail])));
}

function localOffsetMinutesAt(utcMs) {
  return -new Date(utcMs).getTimezoneOffset();
}

/** The chosen time as the API's `at`, or null (and why) when none. */
function chosenAt() {
  return nextLocalTime(view.at.value, Date.now(), localOffsetMinutesAt);
}

function renderAtPreview() {
  const next = chosenAt();
  view.atPreview.textContent = next ? `· ${texts.sends} ${next.at}` : '';
}

async function callApi(path, body) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'X-Unisono-Client': CLIENT_NAME, 'Content-Type': 'application/json' },
    body: JSON.stringify(body ?? {}),
  });
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    // A proxy's HTML error page: apiOutcome falls back to the HTTP status.
  }
  return apiOutcome(response.status, answer);
}

/** Send a command; on 409 not_ready ask in the page's dialog, and resend with confirm: true if agreed. */
async function command(path, body, what) {
  showError('');
  let outcome;
  try {
    outcome = await callApi(path, body);
  } catch {
    showError(texts.requestFailed(what));
    return null;
  }
  if (outcome.confirm) {
    pendingConfirm = { path, body: { ...body, confirm: true }, what };
    view.confirmMessage.textContent = outcome.confirm;
    view.dialog.showModal();
    return null;
  }
  if (outcome.error) {
    showError(outcome.error);
    return null;
  }
  return outcome.body;
}

function leadBody() {
  const seconds = leadSeconds(view.lead.value);
  if (seconds === null) showError(texts.badLead);
  return seconds === null ? null : { in_s: seconds };
}

function atBody() {
  const next = chosenAt();
  if (!next) showError(texts.noTime);
  return next ? { at: next.at } : null;
}

function onClick(button, path, makeBody, what) {
  button.addEventListener('click', () => {
    const body = makeBody();
    if (body) command(path, body, what);
  });
}

onClick(view.start, '/api/start', leadBody, 'start');
onClick(view.reschedule, '/api/reschedule', leadBody, 'reschedule');
onClick(view.startAt, '/api/start', atBody, 'start');
onClick(view.rescheduleAt, '/api/reschedule', atBody, 'reschedule');
onClick(view.abort, '/api/abort', () => ({}), 'abort');
view.at.addEventListener('input', () => overview && renderAtPreview());

view.confirmYes.addEventListener('click', () => {
  const request = pendingConfirm;
  pendingConfirm = null;
  view.dialog.close();
  if (request) command(request.path, request.body, request.what);
});
view.confirmNo.addEventListener('click', () => view.dialog.close());
view.dialog.addEventListener('close', () => { pendingConfirm = null; });

view.announceForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const text = view.announceText.value.trim();
  if (!text) {
    showError(texts.emptyAnnouncement);
    return;
  }
  const sent = await command('/api/announce', { text }, 'announcement');
  if (sent) view.announceSent.textContent = texts.sentTo(new Date().toLocaleTimeString(lang), sent.devices);
});

if (!token) showError(texts.noToken);
setInterval(() => overview && renderCountdown(), REDRAW_INTERVAL_MS);
socket.connect();
