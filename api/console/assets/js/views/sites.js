// The directory: kitchens and street grids with whether they report, when they last did,
// and their unresolved alerts; searched by name or id as one types.

import { api } from "../api.js";
import { h } from "../dom.js";
import { fmtAgo, fmtNumber, t } from "../i18n.js";

export function onlineBadge(online) {
  return h("span", { class: `badge ${online ? "online" : "offline"}` }, t(online ? "online.yes" : "online.no"));
}

export async function renderSites(root, _match, { params }) {
  const kind = params.get("kind") || "kitchen";
  const [list, summary] = await Promise.all([
    api(`/api/v1/sites?kind=${encodeURIComponent(kind)}`), api("/api/v1/alerts/summary"),
  ]);
  const search = h("input", { type: "search", name: "q", placeholder: t("sites.search"),
    value: params.get("q") || "", autocomplete: "off" });
  const body = h("tbody");
  const none = h("p", { class: "message info", hidden: true }, t("sites.none"));
  const rows = list.sites.map((site) => {
    const open = summary.by_site[site.site_id] || 0;
    const tr = h("tr", { dataset: { siteId: site.site_id } },
      h("td", {}, h("a", { href: `#/sites/${site.site_id}` }, site.name)),
      h("td", {}, h("code", {}, site.site_id)),
      h("td", {}, site.subdistrict),
      h("td", {}, onlineBadge(site.reporting)),
      h("td", {}, fmtAgo(site.last_seen_ms)),
      h("td", { class: "num" }, open ? h("a", { href: `#/alerts?site=${site.site_id}&status=unresolved` }, fmtNumber(open)) : "0"));
    return [`${site.name} ${site.site_id} ${site.address}`.toLowerCase(), tr];
  });
  body.append(...rows.map(([, tr]) => tr));
  const apply = () => {
    const words = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    let visible = 0;
    for (const [text, tr] of rows) {
      tr.hidden = !words.every((w) => text.includes(w));
      if (!tr.hidden) visible += 1;
    }
    none.hidden = visible > 0;
  };
  search.addEventListener("input", apply);
  const tab = (k, label) => h("a", { href: `#/sites?kind=${k}`, class: k === kind ? "tab active" : "tab" }, label);
  root.append(
    h("div", { class: "heading" }, h("h1", {}, t("sites.title")),
      tab("kitchen", t("sites.kitchens")), tab("street_grid", t("sites.grids")),
      h("span", { class: "hint" }, `${fmtNumber(list.reporting)} / ${fmtNumber(list.count)} ${t("online.yes")}`)),
    search,
    h("table", { class: "sites" },
      h("thead", {}, h("tr", {}, ["col.site", "col.id", "col.address", "col.online", "col.seen", "col.open"]
        .map((k) => h("th", {}, t(k))))),
      body),
    none);
  apply();
  search.focus();
}
