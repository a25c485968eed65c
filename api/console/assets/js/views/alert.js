// One alert: what, where, when and how often; its evidence; the device's readings around it;
// its history and comments; and the actions its life cycle allows now (the API says which,
// in `actions`), each refused with the API's own reason when it no longer applies.

import { api, currentSession } from "../api.js";
import { everyFor, lineChart } from "../chart.js";
import { clear, describe, h, message } from "../dom.js";
import { onChange } from "../feed.js";
import { fmtNumber, fmtTime, t, term } from "../i18n.js";
import { choices, siteName, statusText } from "./alerts.js";

const AROUND_MS = 30 * 60 * 1000;

function mayAct(alert) {
  const session = currentSession();
  if (!session || session.role === "viewer") return false;
  return session.role === "admin" || session.sites === null || session.sites.includes(alert.site_id);
}

function facts(alert) {
  const rows = [
    ["alert.what", `${term("kind", alert.kind)} · ${term("category", alert.category)}`],
    ["alert.where", h("a", { href: `#/sites/${alert.site_id}` }, siteName(alert.site_id))],
    ["alert.device", alert.device_id || "—"],
    ["alert.first", fmtTime(alert.first_seen_ms)],
    ["alert.last", fmtTime(alert.last_seen_ms)],
    ["alert.ended", fmtTime(alert.ended_ms)],
    ["alert.count", fmtNumber(alert.count)],
    ["alert.assignee", alert.assignee || "—"],
    ["alert.rule", alert.rule],
  ];
  if (alert.case_status) rows.push(["alert.case", term("case", alert.case_status)]);
  const details = Object.entries(alert.details || {});
  return h("dl", { class: "facts" },
    rows.map(([k, v]) => [h("dt", {}, t(k)), h("dd", { dataset: { field: k } }, v)]),
    details.length ? [h("dt", {}, t("alert.details")),
      h("dd", {}, h("code", {}, details.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join("  ")))] : null);
}

function evidence(alert) {
  if (!alert.evidence.length) return null;
  const items = alert.evidence.map((name, index) => {
    const url = `/api/v1/alerts/${alert.id}/evidence/${index}`;
    const note = h("p", { class: "hint" });
    if (name.endsWith(".webm")) {
      const video = h("video", { src: url, controls: true, muted: true, playsinline: true, preload: "metadata" });
      video.addEventListener("error", () => { note.textContent = t("alert.clip.pending"); });
      return h("figure", {}, video, h("figcaption", {}, t("alert.clip")), note);
    }
    const img = h("img", { src: url, alt: t("alert.snapshot"), loading: "lazy" });
    img.addEventListener("error", () => { img.remove(); note.textContent = t("alert.evidence.missing"); });
    return h("figure", {}, img, h("figcaption", {}, t("alert.snapshot")), note);
  });
  return h("section", { class: "evidence" }, h("h2", {}, t("alert.evidence")), items);
}

async function telemetry(alert, box) {
  if (!alert.device_id || alert.category === "camera_health" || alert.kind.startsWith("camera")) return;
  const since = alert.first_seen_ms - AROUND_MS;
  const until = Math.min(Date.now(), (alert.ended_ms || alert.last_seen_ms) + AROUND_MS);
  const every = everyFor((until - since) / 1000);
  const search = new URLSearchParams({
    since: new Date(since).toISOString(), until: new Date(until).toISOString(), every,
  });
  try {
    const series = await api(`/api/v1/devices/${encodeURIComponent(alert.device_id)}/telemetry?${search}`);
    const chart = lineChart(series.points, { marker: alert.first_seen_ms, since, until });
    clear(box, h("h2", {}, t("alert.telemetry")), chart || message("info", t("alert.telemetry.none")));
  } catch (exc) {
    // A device of a type without readings (a camera) has none to show.
    if (exc.status === 404) clear(box); else clear(box, h("h2", {}, t("alert.telemetry")), message("error", describe(exc)));
  }
}

function actions(alert, refresh) {
  if (!mayAct(alert)) return h("p", { class: "hint" }, t("alert.cannot.act"));
  const status = h("div", { class: "status", "aria-live": "polite" });
  const note = h("input", { type: "text", name: "note", maxlength: "2000", placeholder: t("alert.note") });
  const run = async (path, json) => {
    clear(status);
    for (const b of panel.querySelectorAll("button")) b.disabled = true;
    try {
      await api(path, { method: "POST", json });
      await refresh();
    } catch (exc) {
      clear(status, message("error", t("alert.refused", { reason: exc.detail || String(exc) })));
      for (const b of panel.querySelectorAll("button")) b.disabled = false;
    }
  };
  const noteJson = () => (note.value.trim() ? { note: note.value.trim() } : {});
  const lifecycle = alert.actions.map((action) => {
    const path = ["acknowledge", "resolve"].includes(action)
      ? `/api/v1/alerts/${alert.id}/${action}` : `/api/v1/alerts/${alert.id}/case/${action}`;
    return h("button", { type: "button", class: `act act-${action}`, dataset: { action },
      onclick: () => run(path, noteJson()) }, term("action", action));
  });
  const assignee = h("input", { type: "text", name: "assignee", maxlength: "200",
    placeholder: t("alert.assign.placeholder"), value: alert.assignee || "" });
  const comment = h("textarea", { name: "comment", maxlength: "2000", rows: "2",
    placeholder: t("alert.comment.placeholder") });
  const panel = h("section", { class: "actions" },
    lifecycle.length ? h("div", { class: "row" }, note, ...lifecycle) : null,
    h("div", { class: "row" }, assignee, h("button", { type: "button", dataset: { action: "assign" },
      onclick: () => run(`/api/v1/alerts/${alert.id}/assign`, { assignee: assignee.value.trim() || null }) },
    t("alert.assign.send"))),
    h("div", { class: "row" }, comment, h("button", { type: "button", dataset: { action: "comment" },
      onclick: () => comment.value.trim() && run(`/api/v1/alerts/${alert.id}/comments`, { text: comment.value.trim() }) },
    t("alert.comment.send"))),
    status);
  return panel;
}

function historyList(entries) {
  return h("section", { class: "history" }, h("h2", {}, t("alert.history")),
    h("ol", {}, entries.map((e) => h("li", { dataset: { action: e.action } },
      h("time", {}, fmtTime(e.at_ms)), " ", h("strong", {}, term("change", e.action)),
      " · ", e.actor, e.note ? [" — ", e.note] : null))));
}

function commentList(comments) {
  return h("section", { class: "comments" }, h("h2", {}, t("alert.comments")),
    comments.length ? h("ul", {}, comments.map((c) => h("li", {},
      h("time", {}, fmtTime(c.at_ms)), " ", h("strong", {}, c.author), ": ", c.text)))
      : h("p", { class: "hint" }, t("alert.comments.none")));
}

export async function renderAlert(root, [id]) {
  await choices(); // the site names
  const head = h("div");
  const chartBox = h("section", { class: "telemetry" });
  const rest = h("div");
  let shownEvidence = "";
  async function refresh() {
    const [alert, entries] = await Promise.all([
      api(`/api/v1/alerts/${id}`), api(`/api/v1/alerts/${id}/history`),
    ]);
    clear(head,
      h("p", {}, h("a", { href: "#/alerts" }, `← ${t("alert.back")}`)),
      h("div", { class: "heading" },
        h("h1", {}, t("alert.title", { id: alert.id }), " ", term("kind", alert.kind)),
        h("span", { class: `badge sev-${alert.severity}` }, term("severity", alert.severity)),
        h("span", { class: "badge status", id: "alert-status", dataset: { status: alert.status } }, statusText(alert))),
      facts(alert),
      actions(alert, refresh));
    // Evidence and chart stay as they are across changes (no reload of a playing clip).
    const evidenceKey = alert.evidence.join("|");
    if (evidenceKey !== shownEvidence) {
      shownEvidence = evidenceKey;
      const old = root.querySelector("section.evidence");
      const fresh = evidence(alert);
      if (old) old.replaceWith(fresh || h("span")); else if (fresh) head.after(fresh);
    }
    clear(rest, historyList(entries), commentList(alert.comments));
    return alert;
  }
  root.append(head, chartBox, rest);
  const alert = await refresh();
  telemetry(alert, chartBox);
  return onChange((change) => {
    if (change.alert.id === Number(id)) refresh().catch(() => {});
  });
}
