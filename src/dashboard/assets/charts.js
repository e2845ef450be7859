// charts.js: SVG charts drawn from the API's numbers. One kind is needed: bars for one series
// (left axis) with a line for another (right axis), a tooltip that follows the pointer, and
// axis labels. The chart redraws at its container's width.

import { esc } from './api.js';

const SVG_NS = 'http://www.w3.org/2000/svg';

/** A round step so that `count` steps cover max. */
function niceStep(max, count) {
  if (!(max > 0)) return 1;
  const raw = max / count;
  const base = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (m * base >= raw) return m * base;
  }
  return 10 * base;
}

function axis(max, count = 4) {
  const step = niceStep(max, count);
  const top = Math.max(step, Math.ceil(max / step) * step);
  const ticks = [];
  for (let v = 0; v <= top + step / 2; v += step) ticks.push(v);
  return { top, ticks };
}

/**
 * Mounts a bar+line chart in `container`.
 * spec = {
 *   points: [{ label, tick, bar, line }],   // label: tooltip title; tick: x-axis text or ''
 *   bar:  { name, fmt, axisFmt },           // left axis
 *   line: { name, fmt, axisFmt },           // right axis (optional)
 *   empty: 'No requests in the last 24 h',  // shown when every value is zero
 *   title: 'accessible name',
 * }
 * Returns { update(spec), destroy() }.
 */
export function mountChart(container, spec) {
  container.classList.add('chart');
  let current = spec;
  let lastWidth = 0;
  const draw = () => {
    const width = Math.max(260, Math.floor(container.clientWidth));
    lastWidth = width;
    drawChart(container, current, width);
  };
  const ro = new ResizeObserver(() => {
    if (Math.abs(Math.floor(container.clientWidth) - lastWidth) > 2) draw();
  });
  ro.observe(container);
  draw();
  return {
    update(s) {
      current = s;
      draw();
    },
    destroy() {
      ro.disconnect();
    },
  };
}

function drawChart(container, spec, width) {
  const pts = spec.points || [];
  const barMax = Math.max(0, ...pts.map((p) => p.bar || 0));
  const lineMax = spec.line ? Math.max(0, ...pts.map((p) => p.line || 0)) : 0;
  container.textContent = '';
  const legend = document.createElement('div');
  legend.className = 'chart-legend';
  legend.innerHTML =
    `<span><i class="sw sw-bar"></i>${esc(spec.bar.name)}</span>` +
    (spec.line ? `<span><i class="sw sw-line"></i>${esc(spec.line.name)}</span>` : '');
  container.append(legend);
  if (!pts.length || (barMax === 0 && lineMax === 0)) {
    legend.hidden = true;
    const e = document.createElement('div');
    e.className = 'empty chart-empty';
    e.textContent = spec.empty || 'No data';
    container.append(e);
    return;
  }
  const narrow = width < 480;
  const H = narrow ? 190 : 230;
  const m = { l: narrow ? 40 : 52, r: spec.line ? (narrow ? 40 : 52) : 12, t: 10, b: 26 };
  const iw = width - m.l - m.r;
  const ih = H - m.t - m.b;
  const n = pts.length;
  const slot = iw / n;
  const bw = Math.max(1, Math.min(28, slot * 0.7));
  const ya = axis(barMax);
  const yl = spec.line ? axis(lineMax) : null;
  const xOf = (i) => m.l + slot * i + slot / 2;
  const yBar = (v) => m.t + ih - (v / ya.top) * ih;
  const yLine = (v) => m.t + ih - (v / yl.top) * ih;

  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(H));
  svg.setAttribute('viewBox', `0 0 ${width} ${H}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', spec.title || spec.bar.name);
  const parts = [];
  // Grid and left axis labels.
  for (const v of ya.ticks) {
    const y = yBar(v).toFixed(1);
    parts.push(`<line class="grid" x1="${m.l}" x2="${m.l + iw}" y1="${y}" y2="${y}"/>`);
    parts.push(
      `<text class="axis-label" x="${m.l - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${esc(
        (spec.bar.axisFmt || spec.bar.fmt)(v),
      )}</text>`,
    );
  }
  if (yl) {
    for (const v of yl.ticks) {
      const y = yLine(v).toFixed(1);
      parts.push(
        `<text class="axis-label axis-line" x="${m.l + iw + 6}" y="${y}" text-anchor="start" dominant-baseline="middle">${esc(
          (spec.line.axisFmt || spec.line.fmt)(v),
        )}</text>`,
      );
    }
  }
  // X axis and its labels (skipping some when they would collide).
  parts.push(`<line class="axis" x1="${m.l}" x2="${m.l + iw}" y1="${m.t + ih}" y2="${m.t + ih}"/>`);
  const ticked = pts.map((p, i) => [p, i]).filter(([p]) => p.tick);
  const minGap = narrow ? 44 : 52;
  let every = 1;
  while (ticked.length > 1 && (slot * (ticked[Math.min(every, ticked.length - 1)][1] - ticked[0][1])) < minGap && every < ticked.length) every++;
  ticked.forEach(([p, i], k) => {
    if (k % every) return;
    parts.push(
      `<text class="axis-label" x="${xOf(i).toFixed(1)}" y="${H - 8}" text-anchor="middle">${esc(p.tick)}</text>`,
    );
  });
  // Hover column (moved by the pointer handler).
  parts.push(`<rect class="hover-col" x="0" y="${m.t}" width="${slot.toFixed(1)}" height="${ih}" visibility="hidden"/>`);
  // Bars.
  pts.forEach((p, i) => {
    if (!p.bar) return;
    const y = yBar(p.bar);
    const h = Math.max(1, m.t + ih - y);
    parts.push(
      `<rect class="bar" x="${(xOf(i) - bw / 2).toFixed(1)}" y="${(m.t + ih - h).toFixed(1)}" width="${bw.toFixed(1)}" height="${h.toFixed(1)}" rx="1.5"/>`,
    );
  });
  // Line with dots where there is a value.
  if (yl) {
    const d = pts.map((p, i) => `${i ? 'L' : 'M'}${xOf(i).toFixed(1)},${yLine(p.line || 0).toFixed(1)}`).join('');
    parts.push(`<path class="line" d="${d}"/>`);
    pts.forEach((p, i) => {
      if (p.line) parts.push(`<circle class="dot" cx="${xOf(i).toFixed(1)}" cy="${yLine(p.line).toFixed(1)}" r="${narrow ? 2 : 2.5}"/>`);
    });
  }
  svg.innerHTML = parts.join('');
  container.append(svg);

  const tip = document.createElement('div');
  tip.className = 'chart-tip';
  tip.hidden = true;
  container.append(tip);
  const col = svg.querySelector('.hover-col');
  const show = (ev) => {
    const r = svg.getBoundingClientRect();
    const x = ev.clientX - r.left;
    const i = Math.floor((x - m.l) / slot);
    if (i < 0 || i >= n) {
      hide();
      return;
    }
    const p = pts[i];
    col.setAttribute('x', (m.l + slot * i).toFixed(1));
    col.setAttribute('visibility', 'visible');
    tip.innerHTML =
      `<div class="tip-title">${esc(p.label)}</div>` +
      `<div><i class="sw sw-bar"></i>${esc(spec.bar.name)}: <b>${esc(spec.bar.fmt(p.bar || 0))}</b></div>` +
      (spec.line ? `<div><i class="sw sw-line"></i>${esc(spec.line.name)}: <b>${esc(spec.line.fmt(p.line || 0))}</b></div>` : '') +
      (p.extra ? `<div class="muted">${esc(p.extra)}</div>` : '');
    tip.hidden = false;
    const cr = container.getBoundingClientRect();
    const tw = tip.offsetWidth;
    let left = ev.clientX - cr.left + 12;
    if (left + tw > cr.width) left = ev.clientX - cr.left - tw - 12;
    tip.style.left = `${Math.max(0, left)}px`;
    tip.style.top = `${Math.max(0, ev.clientY - cr.top - tip.offsetHeight - 8)}px`;
  };
  const hide = () => {
    tip.hidden = true;
    col.setAttribute('visibility', 'hidden');
  };
  svg.addEventListener('pointermove', show);
  svg.addEventListener('pointerdown', show);
  svg.addEventListener('pointerleave', hide);
}

/**
 * Fills the gaps of a rollup: one point per bucket from `start` (unix seconds, aligned) for
 * `count` buckets of `step` seconds, taking rows by bucket_start.
 */
export function fillBuckets(rows, start, step, count) {
  const by = new Map();
  for (const r of rows || []) {
    const k = r.bucket_start;
    const prev = by.get(k);
    if (!prev) by.set(k, { ...r });
    else for (const f of Object.keys(r)) if (typeof r[f] === 'number' && f !== 'bucket_start') prev[f] = (prev[f] || 0) + r[f];
  }
  const out = [];
  for (let i = 0; i < count; i++) {
    const t = start + i * step;
    out.push({ t, row: by.get(t) || null });
  }
  return out;
}
