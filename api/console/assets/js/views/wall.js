// The video wall: a tile per camera with its newest picture, refreshed every few seconds,
// and its online state; a click opens the live view. Snapshots rather than MJPEG: a browser
// keeps at most six connections to one server, and a wall of MJPEG streams would hold them
// all and starve the page's own requests.

import { api } from "../api.js";
import { clear, h, message } from "../dom.js";
import { fmtAgo, t } from "../i18n.js";
import { onlineBadge } from "./sites.js";

const REFRESH_MS = 2000;
const STATE_MS = 5000;
const MAX_TILES = 16;

export function cameraTiles(cameras, { go }) {
  const tiles = new Map();
  const grid = h("div", { class: "wall" });
  for (const camera of cameras.slice(0, MAX_TILES)) {
    const img = h("img", { alt: "", decoding: "async" });
    const badge = h("span");
    const seen = h("small");
    const tile = h("button", { type: "button", class: "tile", title: t("wall.open"),
      "aria-label": `${camera.name} · ${camera.site_id}`,
      dataset: { cameraId: camera.camera_id }, onclick: () => go(`/live/${camera.camera_id}`) },
    img, h("span", { class: "caption" }, h("strong", {}, camera.name), " ", badge, " ", seen,
      h("small", { class: "hint" }, ` ${camera.site_id}`)));
    tiles.set(camera.camera_id, { img, badge, seen, camera });
    grid.append(tile);
  }
  const paint = (camera) => {
    const tile = tiles.get(camera.camera_id);
    if (!tile) return;
    tile.camera = camera;
    clear(tile.badge, onlineBadge(camera.online));
    tile.seen.textContent = camera.online ? "" : fmtAgo(camera.last_frame_ms);
    tile.img.closest(".tile").classList.toggle("offline", !camera.online);
  };
  const refresh = () => {
    for (const [id, tile] of tiles) {
      if (!tile.camera.online) continue;
      // A new URL each time: the API answers no-store, and the browser must ask again.
      const next = new Image();
      next.onload = () => { tile.img.src = next.src; };
      next.src = `/api/v1/cameras/${encodeURIComponent(id)}/snapshot.jpg?at=${Date.now()}`;
    }
  };
  for (const camera of cameras) paint(camera);
  return { grid, paint, refresh, more: Math.max(0, cameras.length - MAX_TILES) };
}

// Tiles that keep themselves fresh until the returned stop() is called.
export function liveTiles(cameras, fetchCameras, context) {
  const wall = cameraTiles(cameras, context);
  wall.refresh();
  const pictures = setInterval(wall.refresh, REFRESH_MS);
  const states = setInterval(async () => {
    try { for (const camera of await fetchCameras()) wall.paint(camera); } catch { /* next time */ }
  }, STATE_MS);
  return { ...wall, stop: () => { clearInterval(pictures); clearInterval(states); } };
}

export async function renderWall(root, _match, context) {
  const site = context.params.get("site") || "";
  const [sites, cameras] = await Promise.all([
    api("/api/v1/sites"), api(`/api/v1/cameras${site ? `?site=${encodeURIComponent(site)}` : ""}`),
  ]);
  const chooser = h("select", { name: "site", onchange: (e) => context.go(`/wall${e.target.value ? `?site=${e.target.value}` : ""}`) },
    h("option", { value: "" }, t("wall.all")),
    sites.sites.map((s) => h("option", { value: s.site_id, selected: s.site_id === site }, s.name)));
  root.append(h("div", { class: "heading" }, h("h1", {}, t("wall.title")),
    h("label", { class: "filter" }, h("span", {}, t("wall.site")), chooser)));
  if (!cameras.length) {
    root.append(message("info", t("wall.none")));
    return null;
  }
  const query = site ? `?site=${encodeURIComponent(site)}` : "";
  const wall = liveTiles(cameras, () => api(`/api/v1/cameras${query}`), context);
  root.append(wall.grid);
  if (wall.more) root.append(message("info", t("wall.more", { n: wall.more })));
  return wall.stop;
}
