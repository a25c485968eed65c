// The live view: the camera at full rate over WHEP (WebRTC) in the browser. The offer is sent
// with all its candidates (the service answers without trickle ICE); leaving the page ends the
// session on the server so the viewer's place is freed at once.

import { ApiError, api, request } from "../api.js";
import { clear, describe, h, message } from "../dom.js";
import { t } from "../i18n.js";
import { onlineBadge } from "./sites.js";

const GATHER_MS = 3000;

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, GATHER_MS); // what was gathered by then is enough on a LAN
  });
}

async function watch(cameraId, video, status) {
  const pc = new RTCPeerConnection();
  let session = null; // the WHEP session's address, to end it
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addEventListener("track", (event) => {
    video.srcObject = event.streams[0] || new MediaStream([event.track]);
  });
  pc.addEventListener("connectionstatechange", () => {
    if (["failed", "disconnected", "closed"].includes(pc.connectionState)) {
      clear(status, message("error", t("live.ended")));
    }
  });
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const response = await request(`/whep/${encodeURIComponent(cameraId)}`, {
    method: "POST", body: pc.localDescription.sdp, headers: { "Content-Type": "application/sdp" },
  });
  if (response.status !== 201) {
    pc.close();
    let detail = `HTTP ${response.status}`;
    try { detail = (await response.json()).detail || detail; } catch { /* not JSON */ }
    throw new ApiError(response.status, detail);
  }
  session = response.headers.get("Location");
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  return () => {
    pc.close();
    if (session) request(session, { method: "DELETE" }).catch(() => {});
  };
}

export async function renderLive(root, [cameraId]) {
  const cameras = await api("/api/v1/cameras");
  const camera = cameras.find((c) => c.camera_id === cameraId);
  if (!camera) {
    root.append(message("error", t("error.notfound", { reason: cameraId })));
    return null;
  }
  const video = h("video", { id: "live", autoplay: true, muted: true, playsinline: true, controls: true });
  const status = h("div", { class: "status", "aria-live": "polite" }, message("info", t("live.connecting")));
  let stop = null;
  const start = async () => {
    clear(status, message("info", t("live.connecting")));
    try {
      stop = await watch(cameraId, video, status);
    } catch (exc) {
      clear(status, message("error", t("live.failed", { reason: describe(exc) })),
        h("button", { type: "button", onclick: start }, t("live.retry")));
    }
  };
  video.addEventListener("playing", () => clear(status, message("info", t("live.playing"))));
  root.append(
    h("p", {}, h("a", { href: `#/wall?site=${camera.site_id}` }, `← ${t("live.back")}`)),
    h("div", { class: "heading" }, h("h1", {}, `${t("live.title")} · ${camera.name}`), onlineBadge(camera.online),
      h("span", { class: "hint" }, `${camera.camera_id} · ${camera.location || ""}`)),
    h("div", { class: "player" }, video),
    status);
  await start();
  return () => { if (stop) stop(); };
}
