/**
 * What the participant page shows: its state and texts, from plain facts.
 *
 * Pure: no DOM, no clock; the glue passes the facts in. The state names are
 * also the test hook's `window.unisono.state`.
 */

// A device counts as synced when its bound is at most this, as the server's
// overview counts `synced` (PROTOCOL.md section 3).
export const SYNCED_BOUND_US = 10_000;

/**
 * One of 'connecting', 'joined', 'loaded', 'unlocked', 'scheduled', 'playing',
 * 'idle', 'ended', 'error'.
 *
 * facts: {error (text or null), joined (a welcome arrived once), loaded,
 * unlocked, schedule (latest or null), everStarted (a scheduled/playing
 * schedule was seen), start (computeStart's result for the running source,
 * or null), audioNowS (the context's currentTime, or null), trackEnded}.
 * The connection dropping later does not change the state: a scheduled start
 * plays without the network.
 */
export function participantState(facts) {
  const { error, joined, loaded, unlocked, schedule, everStarted, start, audioNowS, trackEnded } = facts;
  if (error) return 'error';
  if (!joined) return 'connecting';
  if (schedule?.state === 'ended' || trackEnded) return 'ended';
  if (start && audioNowS != null && audioNowS >= start.audibleContextTime) return 'playing';
  if (schedule?.state === 'scheduled' || schedule?.state === 'playing') return 'scheduled';
  if (schedule?.state === 'idle' && everStarted) return 'idle';
  if (unlocked) return 'unlocked';
  if (loaded) return 'loaded';
  return 'joined';
}

/** "synced ±3 ms" from the current error bound (µs), "syncing…" while unknown or too wide. */
export function syncText(boundUs) {
  if (boundUs == null || !Number.isFinite(boundUs)) return 'syncing…';
  const boundMs = boundUs / 1000;
  const shown = boundMs < 1 ? '<1' : String(Math.round(boundMs));
  return boundUs <= SYNCED_BOUND_US ? `synced ±${shown} ms` : `syncing… ±${shown} ms`;
}

/** A countdown: "0:05", "12:00", "1:02:03"; whole seconds rounded up, never negative. */
export function countdownText(seconds) {
  const total = Math.max(0, Math.ceil(seconds));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = String(total % 60).padStart(2, '0');
  return hours > 0 ? `${hours}:${String(minutes).padStart(2, '0')}:${secs}` : `${minutes}:${secs}`;
}

/** 'fr' when a BCP 47 tag (navigator.language) is French, else 'en': the same rule as the server's. */
export function pageLanguage(tag) {
  return typeof tag === 'string' && tag.split(/[-_]/)[0].toLowerCase() === 'fr' ? 'fr' : 'en';
}

/** Every text of the participant page, by language. */
export const TEXTS = Object.freeze({
  en: Object.freeze({
    status: Object.freeze({
      connecting: 'Connecting…',
      joined: 'Loading the track…',
      loaded: 'Track ready. Tap to enable sound.',
      unlocked: 'Ready. Waiting for the start.',
      scheduled: 'Starting soon',
      playing: 'Playing',
      idle: 'Stopped by the organizer. Waiting for a new start.',
      ended: 'The show is over. Thank you!',
      error: 'Something went wrong',
    }),
    unlock: 'Tap to enable sound',
    group: 'Group',
    when: 'When',
    where: 'Where',
    bring: 'Bring',
    announcement: 'Message from the organizers',
    startsIn: 'Starts in',
    tapHint: ' (tap the button to hear it)',
    connectionLost: 'Connection lost, reconnecting… (the show continues)',
    downloading: 'Downloading the show for offline use',
    downloaded: 'Downloaded: the show plays even with no network',
    latency: 'Headphone delay (ms), e.g. 200 for Bluetooth',
  }),
  fr: Object.freeze({
    status: Object.freeze({
      connecting: 'Connexion…',
      joined: 'Chargement de la piste…',
      loaded: 'Piste prête. Touchez pour activer le son.',
      unlocked: 'Prêt. En attente du départ.',
      scheduled: 'Départ imminent',
      playing: 'Lecture en cours',
      idle: 'Arrêté par l’organisateur. En attente d’un nouveau départ.',
      ended: 'Le spectacle est terminé. Merci !',
      error: 'Un problème est survenu',
    }),
    unlock: 'Touchez pour activer le son',
    group: 'Groupe',
    when: 'Quand',
    where: 'Où',
    bring: 'À apporter',
    announcement: 'Message des organisateurs',
    startsIn: 'Départ dans',
    tapHint: ' (touchez le bouton pour l’entendre)',
    connectionLost: 'Connexion perdue, reconnexion… (le spectacle continue)',
    downloading: 'Téléchargement du spectacle pour le hors-ligne',
    downloaded: 'Téléchargé : le spectacle joue même sans réseau',
    latency: 'Retard du casque (ms), par ex. 200 en Bluetooth',
  }),
});
