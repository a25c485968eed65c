// The API as the page sees it: same origin, the session cookie, and the CSRF token on every
// change. Errors carry the API's own reason (its `detail`), which the page shows as it is.

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

let session = null; // {name, role, sites, csrf, expires_ms}
const signedOutListeners = [];

export function currentSession() { return session; }
export function onSignedOut(listener) { signedOutListeners.push(listener); }

function detailOf(body, status) {
  if (body && typeof body === "object" && "detail" in body) {
    const d = body.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ");
    return JSON.stringify(d);
  }
  return `HTTP ${status}`;
}

export async function request(path, { method = "GET", json, body, headers = {} } = {}) {
  const init = { method, headers: { ...headers }, credentials: "same-origin" };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  if (!["GET", "HEAD"].includes(method) && session) init.headers["X-CSRF-Token"] = session.csrf;
  let response;
  try {
    response = await fetch(path, init);
  } catch (exc) {
    throw new ApiError(0, exc.message || "network");
  }
  if (response.status === 401 && session && !path.startsWith("/api/v1/session")) {
    session = null;
    for (const listener of signedOutListeners) listener("expired");
  }
  return response;
}

// JSON in, JSON out; ApiError with the API's reason on anything but 2xx.
export async function api(path, options) {
  const response = await request(path, options);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  if (!response.ok) throw new ApiError(response.status, detailOf(body, response.status));
  return body;
}

export async function restoreSession() {
  try {
    session = await api("/api/v1/session");
  } catch (exc) {
    if (exc.status !== 401) throw exc;
    session = null;
  }
  return session;
}

export async function signIn(token) {
  session = await api("/api/v1/session", { method: "POST", json: { token } });
  return session;
}

export async function signOut() {
  try {
    await api("/api/v1/session", { method: "DELETE" });
  } finally {
    session = null;
  }
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) search.append(key, v);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
