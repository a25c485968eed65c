// One Server-Sent Events connection for the whole page: every alert change the session may
// see. EventSource reconnects by itself and resumes after the last event id, so nothing is
// missed across a short network break.

const listeners = new Set();
const stateListeners = new Set();
let source = null;
let state = "closed";

const ACTIONS = [
  "created", "repeated", "cleared", "ended", "acknowledged", "resolved", "filed", "dispatched",
  "handled", "verified", "closed", "cancelled", "assigned", "commented", "reminded", "escalated",
];

export function onChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function onFeedState(listener) {
  stateListeners.add(listener);
  listener(state);
  return () => stateListeners.delete(listener);
}

function announce(next) {
  state = next;
  for (const listener of stateListeners) listener(state);
}

export function startFeed() {
  if (source) return;
  source = new EventSource("/api/v1/alerts/stream");
  source.onopen = () => announce("live");
  source.onerror = () => announce(source && source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  const deliver = (event) => {
    let change;
    try { change = JSON.parse(event.data); } catch { return; }
    for (const listener of listeners) listener(change);
  };
  for (const action of ACTIONS) source.addEventListener(action, deliver);
  source.onmessage = deliver; // an action added after this page was written
}

export function stopFeed() {
  if (source) source.close();
  source = null;
  announce("closed");
}
