// Minimal SVG charts for bench results: no plotting dependency, readable output.

const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

function esc(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/**
 * A line chart. series: [{ name, points: [[x, y], ...], dashed? }].
 * Returns SVG text.
 */
export function lineChart({ title, xLabel, yLabel, series, width = 760, height = 440, xTicks }) {
  const m = { l: 70, r: 220, t: 40, b: 55 };
  const w = width - m.l - m.r;
  const h = height - m.t - m.b;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const x0 = Math.min(...xs, 0);
  const x1 = Math.max(...xs, 1);
  const y1 = niceMax(Math.max(...ys, 0));
  const X = (x) => m.l + ((x - x0) / (x1 - x0 || 1)) * w;
  const Y = (y) => m.t + h - (y / y1) * h;
  const out = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(`<text x="${m.l}" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`);
  for (let i = 0; i <= 5; i++) {
    const v = (y1 * i) / 5;
    out.push(`<line x1="${m.l}" x2="${m.l + w}" y1="${Y(v)}" y2="${Y(v)}" stroke="#ddd"/>`);
    out.push(`<text x="${m.l - 6}" y="${Y(v) + 4}" text-anchor="end">${+v.toPrecision(3)}</text>`);
  }
  const ticks = xTicks ?? [...new Set(xs)].sort((a, b) => a - b);
  for (const t of ticks) {
    out.push(`<text x="${X(t)}" y="${m.t + h + 18}" text-anchor="middle">${esc(t)}</text>`);
  }
  out.push(`<line x1="${m.l}" x2="${m.l + w}" y1="${m.t + h}" y2="${m.t + h}" stroke="black"/>`);
  out.push(`<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${m.t + h}" stroke="black"/>`);
  out.push(`<text x="${m.l + w / 2}" y="${height - 12}" text-anchor="middle">${esc(xLabel)}</text>`);
  out.push(`<text transform="translate(16 ${m.t + h / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`);
  series.forEach((s, i) => {
    const c = s.color ?? COLORS[i % COLORS.length];
    const d = s.points.map((p, j) => `${j ? 'L' : 'M'}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' ');
    out.push(`<path d="${d}" fill="none" stroke="${c}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    for (const p of s.points)
      out.push(`<circle cx="${X(p[0]).toFixed(1)}" cy="${Y(p[1]).toFixed(1)}" r="3" fill="${c}"/>`);
    const ly = m.t + 10 + i * 20;
    out.push(
      `<line x1="${m.l + w + 15}" x2="${m.l + w + 40}" y1="${ly}" y2="${ly}" stroke="${c}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`,
    );
    out.push(`<text x="${m.l + w + 45}" y="${ly + 4}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}

/**
 * Grouped bars, one panel per metric (each with its own scale).
 * panels: [{ title, unit, bars: [{ name, value }] }]. Returns SVG text.
 */
export function barPanels({ title, panels, width = 760, height = 360 }) {
  const m = { l: 20, t: 50, b: 40 };
  const pw = (width - m.l * 2) / panels.length;
  const h = height - m.t - m.b;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${m.l}" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`,
  ];
  panels.forEach((p, i) => {
    const x0 = m.l + i * pw + 30;
    const w = pw - 50;
    const top = niceMax(Math.max(...p.bars.map((b) => b.value), 0));
    const bw = w / p.bars.length - 10;
    out.push(`<text x="${x0 + w / 2}" y="${m.t - 12}" text-anchor="middle" font-weight="bold">${esc(p.title)}</text>`);
    out.push(`<line x1="${x0}" x2="${x0 + w}" y1="${m.t + h}" y2="${m.t + h}" stroke="black"/>`);
    p.bars.forEach((b, j) => {
      const bh = (b.value / top) * h;
      const x = x0 + j * (bw + 10) + 5;
      out.push(
        `<rect x="${x.toFixed(1)}" y="${(m.t + h - bh).toFixed(1)}" width="${bw.toFixed(1)}" height="${bh.toFixed(1)}" fill="${COLORS[j % COLORS.length]}"/>`,
      );
      out.push(
        `<text x="${(x + bw / 2).toFixed(1)}" y="${(m.t + h - bh - 4).toFixed(1)}" text-anchor="middle">${esc(`${+b.value.toPrecision(3)} ${p.unit}`)}</text>`,
      );
      out.push(`<text x="${(x + bw / 2).toFixed(1)}" y="${m.t + h + 16}" text-anchor="middle">${esc(b.name)}</text>`);
    });
  });
  out.push('</svg>');
  return out.join('\n');
}
