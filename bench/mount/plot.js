// A grouped bar chart with min-max whiskers, in the style of bench/lib/svg.js (which has line
// charts only). groups: [{ label, bars: [{ value, min?, max? }] }], one bar per series.

const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b'];

function esc(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

export function barChart({ title, yLabel, series, groups, width = 760, height = 440, note }) {
  const m = { l: 70, r: 220, t: 40, b: note ? 75 : 55 };
  const w = width - m.l - m.r;
  const h = height - m.t - m.b;
  const ys = groups.flatMap((g) => g.bars.map((b) => Math.max(b.value, b.max ?? 0)));
  const y1 = niceMax(Math.max(...ys, 0));
  const Y = (y) => m.t + h - (y / y1) * h;
  const gw = w / groups.length;
  const bw = Math.min(48, (gw * 0.8) / series.length);
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
  groups.forEach((g, gi) => {
    const x0 = m.l + gi * gw + (gw - bw * series.length) / 2;
    g.bars.forEach((b, si) => {
      const c = COLORS[si % COLORS.length];
      const x = x0 + si * bw;
      out.push(
        `<rect x="${x.toFixed(1)}" y="${Y(b.value).toFixed(1)}" width="${(bw - 3).toFixed(1)}" height="${(m.t + h - Y(b.value)).toFixed(1)}" fill="${c}"/>`,
      );
      if (b.min !== undefined && b.max !== undefined) {
        const cx = x + (bw - 3) / 2;
        out.push(
          `<line x1="${cx.toFixed(1)}" x2="${cx.toFixed(1)}" y1="${Y(b.min).toFixed(1)}" y2="${Y(b.max).toFixed(1)}" stroke="black"/>`,
        );
        for (const v of [b.min, b.max])
          out.push(
            `<line x1="${(cx - 4).toFixed(1)}" x2="${(cx + 4).toFixed(1)}" y1="${Y(v).toFixed(1)}" y2="${Y(v).toFixed(1)}" stroke="black"/>`,
          );
      }
      if (b.label !== undefined)
        out.push(
          `<text x="${(x + (bw - 3) / 2).toFixed(1)}" y="${(Y(Math.max(b.value, b.max ?? 0)) - 4).toFixed(1)}" text-anchor="middle" font-size="10">${esc(b.label)}</text>`,
        );
    });
    out.push(
      `<text x="${(m.l + gi * gw + gw / 2).toFixed(1)}" y="${m.t + h + 18}" text-anchor="middle">${esc(g.label)}</text>`,
    );
  });
  out.push(`<line x1="${m.l}" x2="${m.l + w}" y1="${m.t + h}" y2="${m.t + h}" stroke="black"/>`);
  out.push(`<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${m.t + h}" stroke="black"/>`);
  out.push(`<text transform="translate(16 ${m.t + h / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`);
  if (note) out.push(`<text x="${m.l}" y="${height - 12}" font-size="11">${esc(note)}</text>`);
  series.forEach((s, i) => {
    const ly = m.t + 10 + i * 20;
    out.push(`<rect x="${m.l + w + 15}" y="${ly - 6}" width="20" height="12" fill="${COLORS[i % COLORS.length]}"/>`);
    out.push(`<text x="${m.l + w + 40}" y="${ly + 4}">${esc(s)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}
