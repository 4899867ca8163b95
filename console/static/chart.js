// A small SVG line chart: no library, nothing fetched. lineChart(svg, series) redraws the whole chart;
// series = [{name, color, marker: "circle"|"square", points: [[x, y], ...]}]. Each series has its own
// y-range when `separate` is true (accuracy in [0, 1] next to a margin of any size).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function extent(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  if (!isFinite(lo)) return [0, 1];
  if (lo === hi) { lo -= 0.5; hi += 0.5; }
  return [lo, hi];
}

function fmt(v) {
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toPrecision(2);
}

function lineChart(svg, series, options) {
  const opts = Object.assign({width: 480, height: 220, pad: 34, separate: false}, options || {});
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const all = series.flatMap(s => s.points);
  const [x0, x1] = extent(all.map(p => p[0]));
  const shared = extent(all.map(p => p[1]));
  const W = opts.width, H = opts.height, P = opts.pad;
  const top = 12 + 13 * series.length;  // the legend sits above the plot
  const sx = x => P + (x - x0) / (x1 - x0) * (W - 2 * P);
  svg.appendChild(svgEl("line", {x1: P, y1: H - P, x2: W - P, y2: H - P, class: "axis"}));
  svg.appendChild(svgEl("line", {x1: P, y1: top, x2: P, y2: H - P, class: "axis"}));
  svg.appendChild(svgEl("text", {x: P, y: H - P + 14, class: "tick"}, fmt(x0)));
  svg.appendChild(svgEl("text", {x: W - P, y: H - P + 14, class: "tick", "text-anchor": "end"}, fmt(x1) + " steps"));
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const [y0, y1] = opts.separate ? extent(s.points.map(p => p[1])) : shared;
    const sy = y => H - P - (y - y0) / (y1 - y0) * (H - P - top);
    const d = s.points.map((p, j) => (j ? "L" : "M") + sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" ");
    svg.appendChild(svgEl("path", {d, stroke: s.color, fill: "none", "stroke-width": 1.6, class: "series", "data-name": s.name}));
    for (const p of s.points) {
      const cx = sx(p[0]), cy = sy(p[1]);
      const marker = s.marker === "square"
        ? svgEl("rect", {x: cx - 2.5, y: cy - 2.5, width: 5, height: 5, fill: s.color, class: "point"})
        : svgEl("circle", {cx, cy, r: 2.2, fill: s.color, class: "point"});
      svg.appendChild(marker);
    }
    const label = opts.separate ? `${s.name} ${fmt(y0)}–${fmt(y1)}` : s.name;
    svg.appendChild(svgEl("text", {x: W - P, y: 12 + 13 * i, fill: s.color, class: "legend", "text-anchor": "end"}, label));
    if (!opts.separate && i === 0) {
      svg.appendChild(svgEl("text", {x: P - 4, y: top + 4, class: "tick", "text-anchor": "end"}, fmt(y1)));
      svg.appendChild(svgEl("text", {x: P - 4, y: H - P, class: "tick", "text-anchor": "end"}, fmt(y0)));
    }
  });
  svg.dataset.points = String(all.length);
}
