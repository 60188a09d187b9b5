// A small rolling line chart on a canvas: the vehicle is offline, so no chart library.
"use strict";

class RollingChart {
  constructor(canvas, spanSeconds) {
    this.canvas = canvas;
    this.span = spanSeconds;
    this.points = []; // [unix seconds, value]
  }

  add(t, v) {
    if (!Number.isFinite(v)) return;
    const last = this.points[this.points.length - 1];
    if (last && t <= last[0]) return; // keep time increasing (replayed or repeated readings)
    this.points.push([t, v]);
    const horizon = t - this.span;
    while (this.points.length && this.points[0][0] < horizon) this.points.shift();
  }

  draw() {
    const c = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const w = c.clientWidth || c.width, h = c.clientHeight || c.height;
    if (c.width !== Math.round(w * ratio)) { c.width = Math.round(w * ratio); c.height = Math.round(h * ratio); }
    const g = c.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    const pts = this.points;
    if (pts.length < 2) {
      g.fillStyle = "#889";
      g.fillText("waiting for readings", 8, h / 2);
      return;
    }
    let lo = Infinity, hi = -Infinity;
    for (const [, v] of pts) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (hi - lo < 1e-12) { hi += Math.abs(hi) * 0.01 || 1e-6; lo -= Math.abs(lo) * 0.01 || 1e-6; }
    const pad = (hi - lo) * 0.1; lo -= pad; hi += pad;
    const t1 = pts[pts.length - 1][0], t0 = t1 - this.span;
    const left = 64, right = w - 6, top = 6, bottom = h - 16;
    const x = (t) => left + (t - t0) / this.span * (right - left);
    const y = (v) => bottom - (v - lo) / (hi - lo) * (bottom - top);
    g.strokeStyle = "#334"; g.lineWidth = 1;
    g.fillStyle = "#99a"; g.font = "11px sans-serif";
    for (let i = 0; i <= 3; i++) {
      const v = lo + (hi - lo) * i / 3, yy = y(v);
      g.beginPath(); g.moveTo(left, yy); g.lineTo(right, yy); g.stroke();
      g.fillText(v.toPrecision(5), 2, yy + 4);
    }
    g.fillText(`last ${this.span} s`, right - 60, h - 3);
    g.strokeStyle = "#4cf"; g.lineWidth = 1.5; g.beginPath();
    pts.forEach(([t, v], i) => (i ? g.lineTo(x(t), y(v)) : g.moveTo(x(t), y(v))));
    g.stroke();
  }
}
