/**
 * Minimal SVG charts (grouped bars, lines), written by hand so the
 * benchmark needs no charting package. Values are plain numbers; labels are
 * escaped.
 */

const COLORS = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7'];

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  if (v >= 10) return v.toFixed(0);
  if (v >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

export interface Series {
  name: string;
  /** one value per group; null = no data (drawn as a gap, labelled n/a) */
  values: Array<number | null>;
  dashed?: boolean;
}

interface Frame {
  title: string;
  yLabel: string;
  groups: string[];
  series: Series[];
  log?: boolean;
}

function frame(f: Frame, width: number, height: number, body: (x: (g: number, frac: number) => number, y: (v: number) => number, pw: number) => string): string {
  const left = 70;
  const right = 150;
  const top = 40;
  const bottom = 50;
  const pw = width - left - right;
  const ph = height - top - bottom;
  const vals = f.series.flatMap((s) => s.values).filter((v): v is number => v !== null && Number.isFinite(v));
  const max = niceMax(Math.max(0, ...vals));
  const minPos = Math.min(...vals.filter((v) => v > 0), max);
  const lo = f.log ? 10 ** Math.floor(Math.log10(minPos)) : 0;
  const hi = f.log ? 10 ** Math.ceil(Math.log10(max)) : max;
  const y = (v: number) => {
    if (f.log) {
      const lv = Math.log10(Math.max(v, lo));
      return top + ph - ((lv - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo) || 1)) * ph;
    }
    return top + ph - (v / (hi || 1)) * ph;
  };
  const x = (g: number, frac: number) => left + ((g + frac) / f.groups.length) * pw;
  const ticks: number[] = [];
  if (f.log) for (let t = lo; t <= hi * 1.0001; t *= 10) ticks.push(t);
  else for (let i = 0; i <= 5; i++) ticks.push((hi * i) / 5);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  parts.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(f.title)}</text>`);
  for (const t of ticks) {
    parts.push(`<line x1="${left}" x2="${left + pw}" y1="${y(t).toFixed(1)}" y2="${y(t).toFixed(1)}" stroke="#ddd"/>`);
    parts.push(`<text x="${left - 6}" y="${(y(t) + 4).toFixed(1)}" text-anchor="end">${fmt(t)}</text>`);
  }
  parts.push(`<text transform="translate(16 ${top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(f.yLabel)}${f.log ? ' (log)' : ''}</text>`);
  f.groups.forEach((g, i) => parts.push(`<text x="${x(i, 0.5).toFixed(1)}" y="${top + ph + 18}" text-anchor="middle">${esc(g)}</text>`));
  parts.push(`<line x1="${left}" x2="${left + pw}" y1="${top + ph}" y2="${top + ph}" stroke="#333"/>`);
  parts.push(body(x, y, pw));
  f.series.forEach((s, i) => {
    const ly = top + 10 + i * 18;
    const c = COLORS[i % COLORS.length];
    parts.push(`<rect x="${left + pw + 14}" y="${ly - 9}" width="12" height="12" fill="${c}"/>`);
    parts.push(`<text x="${left + pw + 32}" y="${ly + 1}">${esc(s.name)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

export function barChart(f: Frame, width = 760, height = 380): string {
  return frame(f, width, height, (x, y) => {
    const out: string[] = [];
    const n = f.series.length;
    const base = y(f.log ? 0 : 0);
    f.groups.forEach((_, g) => {
      f.series.forEach((s, i) => {
        const v = s.values[g];
        const x0 = x(g, 0.1 + (0.8 * i) / n);
        const w = (x(g, 0.1 + (0.8 * (i + 1)) / n) - x0) * 0.9;
        if (v === null || v === undefined || !Number.isFinite(v)) {
          out.push(`<text x="${(x0 + w / 2).toFixed(1)}" y="${(base - 4).toFixed(1)}" text-anchor="middle" font-size="9" fill="#999">n/a</text>`);
          return;
        }
        const top = y(v);
        const bottom = f.log ? y(0) : base;
        out.push(
          `<rect x="${x0.toFixed(1)}" y="${top.toFixed(1)}" width="${w.toFixed(1)}" height="${Math.max(0, bottom - top).toFixed(1)}" fill="${COLORS[i % COLORS.length]}"><title>${esc(`${s.name}: ${fmt(v)}`)}</title></rect>`,
        );
      });
    });
    return out.join('\n');
  });
}

export function lineChart(f: Frame, width = 760, height = 380): string {
  return frame(f, width, height, (x, y) => {
    const out: string[] = [];
    f.series.forEach((s, i) => {
      const c = COLORS[i % COLORS.length];
      const pts = s.values.map((v, g) => (v === null || !Number.isFinite(v) ? null : `${x(g, 0.5).toFixed(1)},${y(v).toFixed(1)}`));
      const segs: string[][] = [[]];
      for (const p of pts) {
        if (p === null) segs.push([]);
        else segs[segs.length - 1]!.push(p);
      }
      for (const seg of segs) {
        if (seg.length > 1) out.push(`<polyline fill="none" stroke="${c}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''} points="${seg.join(' ')}"/>`);
      }
      for (const p of pts) if (p) out.push(`<circle cx="${p.split(',')[0]}" cy="${p.split(',')[1]}" r="3" fill="${c}"/>`);
    });
    return out.join('\n');
  });
}
