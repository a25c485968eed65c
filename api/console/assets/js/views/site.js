// A site's page: what and where it is, whether it reports, its unresolved alerts, a chart of
// each sensor's readings over the chosen range, and its cameras.

import { api } from "../api.js";
import { everyFor, lineChart } from "../chart.js";
import { clear, describe, h, message } from "../dom.js";
import { fmtAgo, fmtTime, t, term } from "../i18n.js";
import { statusText } from "./alerts.js";
import { onlineBadge } from "./sites.js";
import { liveTiles } from "./wall.js";

const RANGES = { "1h": 3600, "6h": 6 * 3600, "24h": 86400 };
const CAMERA_TYPES = new Set(["kitchen_camera", "street_camera"]);

async function sensorChart(device, seconds, box) {
  const until = Date.now();
  const search = new URLSearchParams({
    since: new Date(until - seconds * 1000).toISOString(),
    until: new Date(until).toISOString(),
    every: everyFor(seconds),
  });
  try {
    const series = await api(`/api/v1/devices/${encodeURIComponent(device.device_id)}/telemetry?${search}`);
    clear(box, lineChart(series.points, {
      title: `${device.name} (${device.device_id})`, height: 180, since: until - seconds * 1000, until,
    })
      || h("p", { class: "hint" }, `${device.name}: ${t("site.nodata")}`));
  } catch (exc) {
    clear(box, message("error", `${device.name}: ${describe(exc)}`));
  }
}

export async function renderSite(root, [siteId], context) {
  const range = RANGES[context.params.get("range")] ? context.params.get("range") : "6h";
  const [site, devices, open] = await Promise.all([
    api(`/api/v1/sites/${encodeURIComponent(siteId)}`),
    api(`/api/v1/devices?site=${encodeURIComponent(siteId)}`),
    api(`/api/v1/alerts?site=${encodeURIComponent(siteId)}&status=open&status=acknowledged&limit=20`),
  ]);
  const drawing = []; // the page is ready when its charts are drawn
  const sensors = devices.devices.filter((d) => !CAMERA_TYPES.has(d.type));
  const hasCameras = devices.devices.some((d) => CAMERA_TYPES.has(d.type));
  root.append(
    h("p", {}, h("a", { href: "#/sites" }, `← ${t("sites.title")}`)),
    h("div", { class: "heading" }, h("h1", {}, site.name), onlineBadge(site.reporting),
      h("span", { class: "hint" }, `${term("sitekind", site.kind)} · ${site.site_id}`)),
    h("dl", { class: "facts" },
      h("dt", {}, t("col.address")), h("dd", {}, `${site.subdistrict} · ${site.address}`),
      site.opening_hours ? [h("dt", {}, t("site.hours")), h("dd", {}, site.opening_hours)] : null,
      h("dt", {}, t("col.seen")), h("dd", {}, fmtAgo(site.last_seen_ms))),
    h("h2", {}, t("site.alerts")),
    open.items.length
      ? h("ul", { class: "site-alerts" }, open.items.map((a) => h("li", {},
        h("span", { class: `badge sev-${a.severity}` }, term("severity", a.severity)), " ",
        h("a", { href: `#/alerts/${a.id}` }, term("kind", a.kind)), " ",
        a.device_id || "", " · ", fmtTime(a.first_seen_ms), " · ", statusText(a))))
      : h("p", { class: "hint" }, t("alerts.none")),
  );

  if (sensors.length) {
    const tabs = Object.keys(RANGES).map((r) => h("a", {
      class: r === range ? "tab active" : "tab", href: `#/sites/${siteId}?range=${r}`,
    }, t(`site.range.${r}`)));
    const charts = h("div", { class: "charts" });
    root.append(h("div", { class: "heading" }, h("h2", {}, t("site.sensors")),
      h("span", { class: "hint" }, t("site.range")), ...tabs), charts);
    const table = h("table", { class: "devices" }, h("tbody", {}, sensors.map((d) => h("tr", {},
      h("td", {}, d.name), h("td", {}, h("code", {}, d.device_id)), h("td", {}, d.type),
      h("td", {}, onlineBadge(d.online)), h("td", {}, fmtAgo(d.last_seen_ms))))));
    charts.before(table);
    for (const device of sensors) {
      const box = h("div", { class: "chart-box" });
      charts.append(box);
      drawing.push(sensorChart(device, RANGES[range], box));
    }
  }

  if (!hasCameras) {
    await Promise.all(drawing);
    return null;
  }
  const cameras = await api(`/api/v1/cameras?site=${encodeURIComponent(siteId)}`);
  const wall = liveTiles(cameras, () => api(`/api/v1/cameras?site=${encodeURIComponent(siteId)}`), context);
  root.append(h("div", { class: "heading" }, h("h2", {}, t("site.cameras")),
    h("a", { href: `#/wall?site=${siteId}` }, t("site.wall"))), wall.grid);
  await Promise.all(drawing);
  return wall.stop;
}
