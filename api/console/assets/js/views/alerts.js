// The alert feed: filters in the address (so a view can be bookmarked), newest first, one
// page at a time, and every change of the live feed applied in place without a reload.

import { api, query } from "../api.js";
import { clear, describe, h, message } from "../dom.js";
import { onChange, onFeedState } from "../feed.js";
import { fmtNumber, fmtTime, t, term } from "../i18n.js";

const SEVERITIES = ["critical", "major", "minor", "warning"];
const CATEGORIES = ["kitchen", "street", "camera_health", "sensor"];
const STATUSES = ["unresolved", "open", "acknowledged", "resolved"];

let catalogue = null; // {sites, kinds}: the filters' choices, fetched once per page load

export async function choices() {
  if (!catalogue) {
    const [sites, kinds] = await Promise.all([api("/api/v1/sites"), api("/api/v1/alerts/kinds")]);
    catalogue = { sites: sites.sites, kinds };
  }
  return catalogue;
}

export function siteName(siteId) {
  const site = catalogue?.sites.find((s) => s.site_id === siteId);
  return site ? site.name : siteId;
}

function apiFilters(filters) {
  const status = filters.status === "unresolved" ? ["open", "acknowledged"] : filters.status;
  return { site: filters.site, kind: filters.kind, category: filters.category,
    severity: filters.severity, status };
}

function matches(alert, filters) {
  if (filters.site && alert.site_id !== filters.site) return false;
  if (filters.kind && alert.kind !== filters.kind) return false;
  if (filters.category && alert.category !== filters.category) return false;
  if (filters.severity && alert.severity !== filters.severity) return false;
  if (filters.status === "unresolved") return alert.status !== "resolved";
  if (filters.status) return alert.status === filters.status;
  return true;
}

function select(name, value, options, onchange) {
  return h(
    "label", { class: "filter" },
    h("span", {}, t(`filter.${name}`)),
    h("select", { name, onchange },
      h("option", { value: "" }, t("filter.any")),
      options.map(([v, label]) => h("option", { value: v, selected: v === value }, label))),
  );
}

export function statusText(alert) {
  return alert.case_status ? `${term("status", alert.status)} · ${term("case", alert.case_status)}`
    : term("status", alert.status);
}

function row(alert) {
  return h(
    "tr",
    { class: `sev-${alert.severity} status-${alert.status}`, dataset: { alertId: alert.id } },
    h("td", {}, fmtTime(alert.first_seen_ms)),
    h("td", {}, h("span", { class: `badge sev-${alert.severity}` }, term("severity", alert.severity))),
    h("td", {}, h("a", { href: `#/alerts/${alert.id}` }, term("kind", alert.kind))),
    h("td", {}, siteName(alert.site_id), alert.device_id ? h("small", {}, ` · ${alert.device_id}`) : null),
    h("td", { class: "status" }, statusText(alert)),
    h("td", { class: "num" }, fmtNumber(alert.count)),
    h("td", {}, fmtTime(alert.last_seen_ms)),
  );
}

export async function renderAlerts(root, _match, { params, go }) {
  const filters = {
    site: params.get("site") || "", kind: params.get("kind") || "",
    category: params.get("category") || "", severity: params.get("severity") || "",
    status: params.has("status") ? params.get("status") : "unresolved",
  };
  const { sites, kinds } = await choices();
  const refilter = (name) => (event) => {
    const next = { ...filters, [name]: event.target.value };
    const search = new URLSearchParams();
    // status is always written: empty means any status, absent means the default.
    for (const [key, value] of Object.entries(next)) if (value || key === "status") search.set(key, value);
    go(`/alerts?${search}`);
  };
  const live = h("span", { class: "live" }, t("alerts.reconnecting"));
  const body = h("tbody");
  const status = h("div", { "aria-live": "polite" });
  const more = h("button", { type: "button", hidden: true }, t("alerts.more"));
  root.append(
    h("div", { class: "heading" }, h("h1", {}, t("alerts.title")), live),
    h("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
      select("site", filters.site, sites.map((s) => [s.site_id, s.name]), refilter("site")),
      select("category", filters.category, CATEGORIES.map((c) => [c, term("category", c)]), refilter("category")),
      select("kind", filters.kind, kinds.map((k) => [k.kind, term("kind", k.kind)]), refilter("kind")),
      select("severity", filters.severity, SEVERITIES.map((s) => [s, term("severity", s)]), refilter("severity")),
      select("status", filters.status,
        STATUSES.map((s) => [s, s === "unresolved" ? t("filter.unresolved") : term("status", s)]),
        refilter("status"))),
    h("table", { class: "alerts" },
      h("thead", {}, h("tr", {},
        ["col.when", "col.severity", "col.what", "col.where", "col.status", "col.count", "col.last"]
          .map((k) => h("th", {}, t(k))))),
      body),
    status,
    more,
  );

  const shown = new Map(); // alert id -> row
  let cursor = null;
  async function load() {
    more.disabled = true;
    try {
      const page = await api(`/api/v1/alerts${query({ ...apiFilters(filters), cursor, limit: 50 })}`);
      for (const alert of page.items) {
        if (shown.has(alert.id)) continue;
        const tr = row(alert);
        shown.set(alert.id, tr);
        body.append(tr);
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      clear(status, shown.size ? null : message("info", t("alerts.none")));
    } catch (exc) {
      clear(status, message("error", describe(exc)));
    } finally {
      more.disabled = false;
    }
  }
  more.addEventListener("click", load);
  await load();

  const stopChanges = onChange((change) => {
    const alert = change.alert;
    const existing = shown.get(alert.id);
    if (existing) {
      const tr = row(alert);
      existing.replaceWith(tr);
      shown.set(alert.id, tr);
    } else if (change.action === "created" && matches(alert, filters)) {
      const tr = row(alert);
      tr.classList.add("new");
      shown.set(alert.id, tr);
      body.prepend(tr);
      clear(status);
    }
  });
  const stopState = onFeedState((state) => {
    live.textContent = state === "live" ? t("alerts.live") : t("alerts.reconnecting");
    live.classList.toggle("on", state === "live");
  });
  return () => { stopChanges(); stopState(); };
}
