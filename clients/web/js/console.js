/**
 * What the organizer console shows and sends, from the status document.
 *
 * Pure: no DOM, no clock, no network. The glue (organizer.js) passes in the
 * status (GET /api/status, or an overview's `status`), the time, the local
 * timezone's offset, and draws what these functions return.
 */

import { countdownText, pageLanguage } from './status.js';

export { pageLanguage as consoleLanguage };

// The funnel's stages, in order (server/openapi.py, GroupCounts).
export const FUNNEL_STAGES = Object.freeze(['connected', 'downloaded', 'unlocked', 'synced', 'ready']);

// The show states in which each control makes sense (PROTOCOL.md section 4).
const CONTROL_STATES = Object.freeze({
  start: ['idle', 'ended'],
  reschedule: ['scheduled'],
  abort: ['scheduled', 'playing'],
});

const MS_PER_DAY = 86_400_000;

/** Every text of the console, by language. */
export const TEXTS = Object.freeze({
  en: Object.freeze({
    title: 'Unisono · organizer',
    connecting: 'connecting…',
    connected: 'live',
    reconnecting: 'connection lost, reconnecting…',
    closed: 'closed',
    noToken: 'No organizer token in the address: open the organizer link printed by `unisono serve`.',
    show: 'Show',
    states: Object.freeze({ idle: 'idle', scheduled: 'scheduled', playing: 'playing', ended: 'ended' }),
    startsIn: 'starts in',
    startedAgo: 'playing for',
    startIn: 'Start in',
    seconds: 'seconds',
    start: 'Start',
    reschedule: 'Reschedule',
    startAt: 'Start at',
    startAtButton: 'Start at this time',
    rescheduleAt: 'Reschedule to this time',
    abort: 'Abort',
    safeLead: 'Safe lead',
    safeLeadHint: 'the slowest phone needs this much notice',
    yourTimezone: 'Your timezone',
    serverTimezone: 'server',
    sends: 'sends',
    noTime: 'Choose a time first.',
    badLead: 'The lead time must be more than 0 and at most 86400 seconds.',
    announcement: 'Announcement to every phone',
    announcePlaceholder: 'e.g. Rain: meet under the market hall',
    send: 'Send',
    sentTo: (time, devices) => `sent at ${time} to ${devices} phone${devices === 1 ? '' : 's'}`,
    emptyAnnouncement: 'Type the announcement first.',
    devices: 'Devices connected',
    groups: 'Devices per group',
    group: 'group',
    total: 'total',
    funnel: 'Readiness',
    stages: Object.freeze({ connected: 'connected', downloaded: 'downloaded', unlocked: 'audio unlocked', synced: '≤ 10 ms', ready: 'ready' }),
    readyShare: (share, min) => `${share} % ready (a start below ${min} % asks to confirm)`,
    phones: (p) => `screen kept on: ${p.wake_lock} · page hidden: ${p.hidden} · output latency reported: ${p.latency_reported}${p.latency_mean_ms == null ? '' : ` (mean ${p.latency_mean_ms} ms)`}`,
    bounds: 'Error bounds',
    boundsCaption: 'Devices by clock error bound',
    unknown: 'no estimate',
    laggards: 'Laggards',
    noLaggards: 'none: every phone is ready',
    device: 'device',
    bound: 'bound',
    rtt: 'round trip',
    reason: 'reason',
    clock: 'Server clock',
    serverTime: 'Server time',
    loopLag: 'Event loop lag (p99)',
    upstream: 'Upstream offset',
    nodes: (count) => `Server nodes: ${count}`,
    node: (n) => `${n.node}: ${n.devices} phone${n.devices === 1 ? '' : 's'}, loop lag ${formatMs(n.loop_lag_ms)}${n.upstream_offset_ms == null ? '' : `, upstream ${formatMs(n.upstream_offset_ms)}`}${n.age_s > 2 ? `, seen ${n.age_s} s ago` : ''}`,
    noUpstream: 'no upstream server',
    events: 'Event log',
    time: 'time',
    who: 'who',
    action: 'action',
    detail: 'detail',
    join: 'Join',
    joinAlt: 'QR code of the page participants open',
    poster: 'Printable poster',
    confirmTitle: 'Start anyway?',
    confirmYes: 'Start anyway',
    confirmNo: 'Cancel',
    notConnected: 'Not connected to the server.',
    requestFailed: (what) => `The ${what} did not reach the server: check the network.`,
  }),
  fr: Object.freeze({
    title: 'Unisono · organisation',
    connecting: 'connexion…',
    connected: 'en direct',
    reconnecting: 'connexion perdue, reconnexion…',
    closed: 'fermé',
    noToken: 'Pas de jeton organisateur dans l’adresse : ouvrez le lien organisateur affiché par `unisono serve`.',
    show: 'Spectacle',
    states: Object.freeze({ idle: 'à l’arrêt', scheduled: 'programmé', playing: 'en cours', ended: 'terminé' }),
    startsIn: 'départ dans',
    startedAgo: 'en cours depuis',
    startIn: 'Départ dans',
    seconds: 'secondes',
    start: 'Démarrer',
    reschedule: 'Reprogrammer',
    startAt: 'Départ à',
    startAtButton: 'Démarrer à cette heure',
    rescheduleAt: 'Reprogrammer à cette heure',
    abort: 'Arrêter',
    safeLead: 'Préavis sûr',
    safeLeadHint: 'le téléphone le plus lent a besoin de ce préavis',
    yourTimezone: 'Votre fuseau',
    serverTimezone: 'serveur',
    sends: 'envoie',
    noTime: 'Choisissez d’abord une heure.',
    badLead: 'Le préavis doit être de plus de 0 et d’au plus 86400 secondes.',
    announcement: 'Annonce à tous les téléphones',
    announcePlaceholder: 'p. ex. Pluie : rendez-vous sous la halle',
    send: 'Envoyer',
    sentTo: (time, devices) => `envoyée à ${time} à ${devices} téléphone${devices > 1 ? 's' : ''}`,
    emptyAnnouncement: 'Écrivez d’abord l’annonce.',
    devices: 'Appareils connectés',
    groups: 'Appareils par groupe',
    group: 'groupe',
    total: 'total',
    funnel: 'Préparation',
    stages: Object.freeze({ connected: 'connectés', downloaded: 'téléchargé', unlocked: 'son activé', synced: '≤ 10 ms', ready: 'prêts' }),
    readyShare: (share, min) => `${share} % prêts (en dessous de ${min} %, un départ demande confirmation)`,
    phones: (p) => `écran maintenu allumé : ${p.wake_lock} · page cachée : ${p.hidden} · latence de sortie connue : ${p.latency_reported}${p.latency_mean_ms == null ? '' : ` (moyenne ${p.latency_mean_ms} ms)`}`,
    bounds: 'Marges d’erreur',
    boundsCaption: 'Appareils par marge d’erreur d’horloge',
    unknown: 'pas d’estimation',
    laggards: 'Retardataires',
    noLaggards: 'aucun : tous les téléphones sont prêts',
    device: 'appareil',
    bound: 'marge',
    rtt: 'aller-retour',
    reason: 'raison',
    clock: 'Horloge du serveur',
    serverTime: 'Heure du serveur',
    loopLag: 'Retard de la boucle (p99)',
    upstream: 'Écart à la référence',
    nodes: (count) => `Nœuds serveur : ${count}`,
    node: (n) => `${n.node} : ${n.devices} téléphone${n.devices > 1 ? 's' : ''}, retard de boucle ${formatMs(n.loop_lag_ms)}${n.upstream_offset_ms == null ? '' : `, écart ${formatMs(n.upstream_offset_ms)}`}${n.age_s > 2 ? `, vu il y a ${n.age_s} s` : ''}`,
    noUpstream: 'pas de serveur de référence',
    events: 'Journal',
    time: 'heure',
    who: 'qui',
    action: 'action',
    detail: 'détail',
    join: 'Rejoindre',
    joinAlt: 'QR code de la page des participants',
    poster: 'Affiche à imprimer',
    confirmTitle: 'Démarrer quand même ?',
    confirmYes: 'Démarrer quand même',
    confirmNo: 'Annuler',
    notConnected: 'Pas de connexion au serveur.',
    requestFailed: (what) => `La commande (${what}) n’a pas atteint le serveur : vérifiez le réseau.`,
  }),
});

/** "3.2 ms", "<0.1 ms", "120 ms"; "—" when unknown. */
export function formatMs(ms) {
  if (ms == null || !Number.isFinite(ms)) return '—';
  if (Math.abs(ms) < 0.1) return '<0.1 ms';
  return Math.abs(ms) < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

/** A lead in ms as people read it: "1.5 s", "12 s", "2 min 5 s". */
export function formatLead(ms) {
  const seconds = ms / 1000;
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 120) return `${Math.round(seconds)} s`;
  const whole = Math.round(seconds);
  return `${Math.floor(whole / 60)} min ${whole % 60} s`;
}

/** The wall-clock part "21:04:05" of an RFC 3339 time (as the server writes it, in its own timezone). */
export function clockPart(rfc3339) {
  const match = /T(\d{2}:\d{2}:\d{2})/.exec(rfc3339 ?? '');
  return match ? match[1] : '';
}

/** Which controls the show's state allows: {start, reschedule, abort}. */
export function controlsFor(state) {
  return Object.fromEntries(Object.entries(CONTROL_STATES).map(([name, states]) => [name, states.includes(state)]));
}

/**
 * The countdown line: "starts in 0:05" while scheduled, "playing for 1:02"
 * while playing, '' otherwise. serverNowUs: the server's time now, as the
 * glue extrapolates it from the latest status.
 */
export function countdownLine(show, serverNowUs, texts) {
  if (show?.start_us == null) return '';
  const remainingS = (show.start_us - serverNowUs) / 1e6;
  if (show.state === 'scheduled') return `${texts.startsIn} ${countdownText(remainingS)}`;
  if (show.state === 'playing') return `${texts.startedAgo} ${countdownText(-remainingS)}`;
  return '';
}

/**
 * The funnel's rows: one per group (the server's order) and the total, each
 * {name, total, counts: {stage: n}, shares: {stage: 0..1 of connected}}.
 */
export function funnelRows(status) {
  const row = (name, counts, total) => {
    const connected = counts?.connected ?? 0;
    const values = Object.fromEntries(FUNNEL_STAGES.map((stage) => [stage, counts?.[stage] ?? 0]));
    const shares = Object.fromEntries(FUNNEL_STAGES.map((stage) => [stage, connected > 0 ? values[stage] / connected : 0]));
    return { name, total, counts: values, shares };
  };
  const groups = Object.entries(status?.groups ?? {}).map(([name, counts]) => row(name, counts, false));
  return [...groups, row('', status?.funnel, true)];
}

/**
 * The histogram's bars from status.bounds {edges_ms, counts, unknown}: one
 * per bin ("≤ 1 ms", "1–2 ms", ..., "> 100 ms") and "no estimate" last, each
 * {label, count, fraction (of the tallest bar, 0..1), over (above 10 ms)}.
 */
export function histogramBars(bounds, texts) {
  const edges = bounds?.edges_ms ?? [];
  const counts = bounds?.counts ?? [];
  const bars = counts.map((count, i) => {
    let label;
    if (i === 0) label = `≤ ${edges[0]} ms`;
    else if (i < edges.length) label = `${edges[i - 1]}–${edges[i]} ms`;
    else label = `> ${edges[edges.length - 1]} ms`;
    const upper = i < edges.length ? edges[i] : Infinity;
    return { label, count, over: upper > 10, unknown: false };
  });
  bars.push({ label: texts.unknown, count: bounds?.unknown ?? 0, over: true, unknown: true });
  const tallest = Math.max(1, ...bars.map((bar) => bar.count));
  return bars.map((bar) => ({ ...bar, fraction: bar.count / tallest }));
}

/** The clock's health as [label, value] lines. */
export function clockLines(status, texts) {
  const clock = status?.clock ?? {};
  const upstream = clock.upstream_offset_ms == null
    ? texts.noUpstream
    : `${formatMs(clock.upstream_offset_ms)}${clock.upstream ? ` (${clock.upstream})` : ''}`;
  const lines = [
    [texts.serverTime, `${clockPart(status?.server_time)} · ${status?.timezone ?? ''}`],
    [texts.loopLag, formatMs(clock.loop_lag_ms)],
    [texts.upstream, upstream],
  ];
  // A cluster: one line per node (a single server lists only itself).
  const nodes = status?.nodes ?? [];
  if (nodes.length > 1) nodes.forEach((node, i) => lines.push([i === 0 ? texts.nodes(nodes.length) : '', texts.node(node)]));
  return lines;
}

/** "ready share" as a whole percent and the threshold, for texts.readyShare. */
export function readyPercents(status) {
  return [Math.round((status?.ready_share ?? 1) * 100), Math.round((status?.ready_share_min ?? 0) * 100)];
}

/** ±HH:MM of an offset east of UTC in minutes. */
function offsetText(minutes) {
  const sign = minutes < 0 ? '-' : '+';
  const abs = Math.abs(minutes);
  return `${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
}

/** An instant (ms since the Unix epoch) as RFC 3339 in a zone `offsetMinutes` east of UTC, to the second. */
export function rfc3339(utcMs, offsetMinutes) {
  const wall = new Date(utcMs + offsetMinutes * 60_000).toISOString().slice(0, 19);
  return `${wall}${offsetText(offsetMinutes)}`;
}

/**
 * The next instant, after `nowMs`, at which the local clock reads `timeText`
 * ("HH:MM" or "HH:MM:SS", what <input type="time"> gives): today, or tomorrow
 * when today's has passed. offsetMinutesAt(utcMs): the local zone's offset
 * east of UTC at that instant (the glue passes -Date#getTimezoneOffset), so
 * a daylight-saving change is honoured. Returns {utcMs, at (RFC 3339 with the
 * local offset), tomorrow}, or null for a malformed text.
 */
export function nextLocalTime(timeText, nowMs, offsetMinutesAt) {
  const match = /^(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?$/.exec(timeText ?? '');
  if (!match) return null;
  const [hours, minutes, seconds] = [Number(match[1]), Number(match[2]), Number(match[3] ?? 0)];
  if (hours > 23 || minutes > 59 || seconds > 59) return null;
  const localNow = new Date(nowMs + offsetMinutesAt(nowMs) * 60_000);
  const midnight = Date.UTC(localNow.getUTCFullYear(), localNow.getUTCMonth(), localNow.getUTCDate());
  const wallMs = midnight + ((hours * 60 + minutes) * 60 + seconds) * 1000;
  for (const day of [0, 1]) {
    const wall = wallMs + day * MS_PER_DAY;
    // The offset at the wall time itself: look it up near the instant, then at it.
    const guess = wall - offsetMinutesAt(nowMs) * 60_000;
    const offset = offsetMinutesAt(guess);
    const utcMs = wall - offset * 60_000;
    if (utcMs > nowMs) return { utcMs, at: rfc3339(utcMs, offset), tomorrow: day === 1 };
  }
  return null;
}

/** The lead field's value as the API's in_s, or null when outside (0, 86400]. */
export function leadSeconds(text) {
  const value = Number(String(text ?? '').trim().replace(',', '.'));
  if (String(text ?? '').trim() === '' || !Number.isFinite(value) || value <= 0 || value > 86_400) return null;
  return value;
}

/**
 * What to do with an API answer: {ok: true, body} for 2xx; {confirm: message}
 * for 409 not_ready (ask, then resend with confirm: true); else {error: text}
 * with the server's message and code.
 */
export function apiOutcome(httpStatus, body) {
  if (httpStatus >= 200 && httpStatus < 300) return { ok: true, body };
  const message = typeof body?.message === 'string' ? body.message : `HTTP ${httpStatus}`;
  if (httpStatus === 409 && body?.error === 'not_ready') return { confirm: message };
  return { error: body?.error ? `${message} (${body.error})` : message };
}
