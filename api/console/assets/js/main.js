// The console's frame: who is signed in, the language, the open-alert counts, the critical
// cue, and the hash router that swaps the views in and out.

import { api, currentSession, onSignedOut, restoreSession, signOut } from "./api.js";
import { clear, describe, h, message, throttle } from "./dom.js";
import { onChange, startFeed, stopFeed } from "./feed.js";
import { lang, setLang, t, term, translateStatic } from "./i18n.js";
import { renderAlert } from "./views/alert.js";
import { renderAlerts } from "./views/alerts.js";
import { renderLive } from "./views/live.js";
import { renderSignIn } from "./views/signin.js";
import { renderSite } from "./views/site.js";
import { renderSites } from "./views/sites.js";
import { renderWall } from "./views/wall.js";

const ROUTES = [
  [/^\/signin$/, renderSignIn, "signin"],
  [/^\/alerts$/, renderAlerts, "alerts"],
  [/^\/alerts\/(\d+)$/, renderAlert, "alerts"],
  [/^\/sites$/, renderSites, "sites"],
  [/^\/sites\/([A-Za-z0-9_.:-]+)$/, renderSite, "sites"],
  [/^\/wall$/, renderWall, "wall"],
  [/^\/live\/([A-Za-z0-9_.:-]+)$/, renderLive, "wall"],
];

const view = document.getElementById("view");
let cleanup = null;
let signInNotice = null;

function go(path) {
  if (location.hash === `#${path}`) route();
  else location.hash = `#${path}`;
}

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/alerts";
  const [path, search = ""] = raw.split("?");
  return { path, params: new URLSearchParams(search) };
}

let generation = 0;

async function route() {
  const mine = ++generation;
  if (cleanup) { try { cleanup(); } catch { /* a view's own business */ } cleanup = null; }
  const { path, params } = parseHash();
  if (!currentSession() && path !== "/signin") { go("/signin"); return; }
  if (currentSession() && path === "/signin") { go("/alerts"); return; }
  const match = ROUTES.map(([re, render, nav]) => [re.exec(path), render, nav]).find(([m]) => m);
  if (!match) { go("/alerts"); return; }
  const [m, render, nav] = match;
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === nav);
  }
  // Each view renders into a container of its own: a view still loading when the address
  // changes again fills a container that is no longer on the page, and is stopped at once.
  const container = h("div", { class: "page" });
  view.setAttribute("aria-busy", "true");
  clear(view, container);
  const context = { params, notice: signInNotice, go, signedIn };
  signInNotice = null;
  let stop = null;
  try {
    stop = (await render(container, m.slice(1), context)) || null;
  } catch (exc) {
    clear(container, message("error", describe(exc)));
  }
  if (mine !== generation) {
    if (stop) stop();
    return;
  }
  cleanup = stop;
  view.setAttribute("aria-busy", "false");
}

function showBar() {
  const session = currentSession();
  const bar = document.getElementById("bar");
  bar.hidden = !session;
  if (!session) { lastSummary = null; paintCounts(); return; }
  document.getElementById("who").textContent = `${session.name} · ${t(`role.${session.role}`)}`;
  refreshCounts();
}

let lastSummary = null;

function paintCounts() {
  const box = document.getElementById("counts");
  if (!lastSummary) { clear(box); return; }
  clear(
    box,
    h("span", { class: "label" }, t("counts.open")),
    ...Object.entries(lastSummary.by_severity).map(([severity, n]) =>
      h(
        "a",
        {
          class: `count sev-${severity}${n ? "" : " zero"}`,
          href: `#/alerts?severity=${severity}&status=unresolved`,
          dataset: { severity },
        },
        `${term("severity", severity)} ${n}`,
      ),
    ),
  );
}

const refreshCounts = throttle(async () => {
  if (!currentSession()) return;
  try {
    lastSummary = await api("/api/v1/alerts/summary");
    paintCounts();
  } catch { /* the counts are a convenience; the feed says when the server is away */ }
}, 1000);

function criticalCue(change) {
  const alert = change.alert;
  if (change.action !== "created" || alert.severity !== "critical") return;
  const banner = document.getElementById("critical");
  clear(
    banner,
    h("a", { href: `#/alerts/${alert.id}` },
      t("critical.banner", { what: term("kind", alert.kind), where: alert.site_id })),
    h("button", { type: "button", onclick: () => { banner.hidden = true; } }, t("critical.dismiss")),
  );
  banner.hidden = false;
  banner.classList.remove("flash");
  void banner.offsetWidth; // restart the animation
  banner.classList.add("flash");
  beep();
}

function beep() {
  try {
    const audio = new AudioContext();
    const tone = audio.createOscillator();
    const gain = audio.createGain();
    tone.frequency.value = 880;
    gain.gain.value = 0.2;
    tone.connect(gain).connect(audio.destination);
    tone.start();
    tone.stop(audio.currentTime + 0.4);
    tone.onended = () => audio.close();
  } catch { /* no sound device, or the browser wants a click first: the banner stays */ }
}

function relabel() {
  document.getElementById("lang").textContent = t("lang.switch");
  translateStatic();
  paintCounts();
  showBar();
}

function signedIn() {
  showBar();
  startFeed();
  go("/alerts");
}

async function boot() {
  setLang(lang());
  relabel();
  document.getElementById("lang").addEventListener("click", () => {
    setLang(lang() === "zh-CN" ? "en" : "zh-CN");
    relabel();
    route();
  });
  document.getElementById("signout").addEventListener("click", async () => {
    try { await signOut(); } catch { /* signed out here whatever the server said */ }
    stopFeed();
    signInNotice = { kind: "info", text: t("signin.ended") };
    showBar();
    go("/signin");
  });
  onSignedOut((why) => {
    stopFeed();
    signInNotice = { kind: "error", text: t(why === "expired" ? "signin.expired" : "signin.ended") };
    showBar();
    go("/signin");
  });
  onChange((change) => { refreshCounts(); criticalCue(change); });
  window.addEventListener("hashchange", route);
  try {
    await restoreSession();
  } catch (exc) {
    clear(view, message("error", describe(exc)));
    return;
  }
  showBar();
  if (currentSession()) startFeed();
  route();
}

boot();
