// Time-series charts of the API's telemetry rows ({"ts": RFC 3339, metric: value, ...}),
// drawn with the vendored uPlot: one chart per device, one line per numeric metric.

import { h } from "./dom.js";
import { fmtClock, fmtNumber, fmtTime } from "./i18n.js";

const COLOURS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989"];

// A device's own upkeep, not what a supervisor watches (and on scales that flatten the rest).
const UPKEEP = new Set(["battery_pct", "rssi_dbm", "uptime_s"]);

export function numericMetrics(points) {
  const names = new Set();
  for (const point of points) {
    for (const [key, value] of Object.entries(point)) {
      if (key !== "ts" && !UPKEEP.has(key) && typeof value === "number") names.add(key);
    }
  }
  return [...names].sort();
}

// A chart element (or null when there is nothing numeric to draw).
export function lineChart(points, { title = "", height = 220, marker = null, since = null, until = null } = {}) {
  const metrics = numericMetrics(points);
  if (!metrics.length || !window.uPlot) return null;
  const xs = points.map((p) => Date.parse(p.ts) / 1000);
  const data = [xs, ...metrics.map((m) => points.map((p) => (typeof p[m] === "number" ? p[m] : null)))];
  const box = h("figure", { class: "chart", dataset: { metrics: metrics.join(",") } });
  const width = () => Math.max(320, (box.parentElement?.clientWidth || 640) - 16);
  const options = {
    title,
    width: 640,
    height,
    tzDate: (ts) => new Date(ts * 1000),
    // The whole asked-for window, not just where readings happen to be.
    scales: since === null ? {} : { x: { time: true, range: () => [since / 1000, until / 1000] } },
    series: [
      { value: (_u, ts) => (ts === null ? "—" : fmtTime(ts * 1000)) },
      ...metrics.map((m, i) => ({
        label: m, stroke: COLOURS[i % COLOURS.length], width: 1.5, spanGaps: true,
        value: (_u, v) => fmtNumber(v, 2),
      })),
    ],
    // Clock times in the page's language, 24-hour, whatever uPlot's own defaults are.
    axes: [{ values: (_u, splits) => splits.map((ts) => fmtClock(ts * 1000)) }, {}],
    hooks: marker === null ? {} : {
      draw: [(u) => {
        const x = u.valToPos(marker / 1000, "x", true);
        const ctx = u.ctx;
        ctx.save();
        ctx.strokeStyle = "#d1242f";
        ctx.setLineDash([4, 4]);
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
        ctx.restore();
      }],
    },
  };
  const plot = new window.uPlot(options, data, box);
  requestAnimationFrame(() => plot.setSize({ width: width(), height }));
  return box;
}

// An `every` for the API that gives at most ~300 points over `seconds`.
export function everyFor(seconds) {
  const steps = [["30s", 30], ["1m", 60], ["5m", 300], ["15m", 900], ["1h", 3600]];
  for (const [every, s] of steps) if (seconds / s <= 300) return every;
  return "1h";
}
