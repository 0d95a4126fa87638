// The SVG figure of bench/operator.ts: one log-log panel per measured figure against the number
// of TaskBatches, each point labelled with its value, and a dotted "∝ N" line through the first
// point, so growth slower or faster than linear shows as a flatter or steeper slope.

export interface PlotSeries {
  label: string;
  /** One value per N (same order as the panel's `ns`); NaN or ≤ 0 leaves the point out. */
  values: number[];
  color: string;
}

export interface PlotPanel {
  title: string;
  unit: string;
  series: PlotSeries[];
  /** Draw the dotted "∝ N" line (default true; off for per-batch figures, where flat is linear). */
  linearReference?: boolean;
}

const W = 320;
const H = 230;
const M = { left: 52, right: 14, top: 42, bottom: 40 };

export function renderSvg(title: string, subtitle: string, ns: number[], panels: PlotPanel[]): string {
  const cols = 3;
  const rows = Math.ceil(panels.length / cols);
  const width = cols * W;
  const height = rows * H + 52;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`,
    `<text x="${width / 2}" y="38" text-anchor="middle" fill="#555">${esc(subtitle)}</text>`,
  ];
  panels.forEach((p, i) => {
    out.push(panel(p, ns, (i % cols) * W, 52 + Math.floor(i / cols) * H));
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

function panel(p: PlotPanel, ns: number[], x0: number, y0: number): string {
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const all = p.series.flatMap((s) => s.values).filter((v) => Number.isFinite(v) && v > 0);
  // A little headroom on a log scale, so a value near a decade is not drawn on the frame.
  const lo = Math.floor(Math.log10(Math.min(...all, 1e9)) - 0.1);
  let hi = Math.ceil(Math.log10(Math.max(...all, 1e-9)) + 0.15);
  if (hi <= lo) hi = lo + 1;
  const xlo = Math.log10(Math.min(...ns));
  const xhi = Math.log10(Math.max(...ns));
  const X = (n: number): number => x0 + M.left + ((Math.log10(n) - xlo) / (xhi - xlo || 1)) * pw;
  const Y = (v: number): number => y0 + M.top + ph - ((Math.log10(v) - lo) / (hi - lo)) * ph;
  const g: string[] = [`<g>`, `<text x="${x0 + M.left + pw / 2}" y="${y0 + 16}" text-anchor="middle" font-weight="bold">${esc(p.title)}</text>`];
  g.push(`<rect x="${x0 + M.left}" y="${y0 + M.top}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
  for (let d = lo; d <= hi; d++) {
    const y = Y(10 ** d);
    g.push(`<line x1="${x0 + M.left}" x2="${x0 + M.left + pw}" y1="${y}" y2="${y}" stroke="#eee"/>`);
    g.push(`<text x="${x0 + M.left - 4}" y="${y + 4}" text-anchor="end" fill="#555">${fmtTick(10 ** d)}</text>`);
  }
  for (const n of ns) {
    g.push(`<text x="${X(n)}" y="${y0 + M.top + ph + 14}" text-anchor="middle" fill="#555">${n.toLocaleString('en-US')}</text>`);
  }
  g.push(`<text x="${x0 + M.left + pw / 2}" y="${y0 + M.top + ph + 30}" text-anchor="middle" fill="#555">TaskBatches (N), log scale; ${esc(p.unit)}, log scale</text>`);
  // ∝ N through the first point of the first series, labelled at its middle.
  const first = p.series[0]?.values.findIndex((v) => Number.isFinite(v) && v > 0) ?? -1;
  if (first >= 0 && p.linearReference !== false) {
    const v0 = p.series[0]!.values[first]!;
    const n0 = ns[first]!;
    const n1 = ns[ns.length - 1]!;
    const v1 = Math.min(v0 * (n1 / n0), 10 ** hi);
    const nEnd = n0 * (v1 / v0);
    g.push(`<line x1="${X(n0)}" y1="${Y(v0)}" x2="${X(nEnd)}" y2="${Y(v1)}" stroke="#bbb" stroke-dasharray="3,3"/>`);
    // A quarter of the way along, under the line: clear of the data labels at the points.
    const f = 0.25;
    g.push(`<text x="${X(n0 ** (1 - f) * nEnd ** f) + 4}" y="${Y(v0 ** (1 - f) * v1 ** f) + 14}" fill="#aaa">∝ N</text>`);
  }
  p.series.forEach((s, si) => {
    const pts = s.values.map((v, i) => [ns[i]!, v] as const).filter(([, v]) => Number.isFinite(v) && v > 0);
    if (pts.length > 1) g.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.map(([n, v]) => `${X(n)},${Y(v)}`).join(' ')}"/>`);
    for (const [n, v] of pts) {
      g.push(`<circle cx="${X(n)}" cy="${Y(v)}" r="3" fill="${s.color}"/>`);
      g.push(
        `<text x="${X(n) + (n === ns[ns.length - 1] ? -5 : 5)}" y="${Y(v) + (si === 0 ? -6 : 13)}" text-anchor="${n === ns[ns.length - 1] ? 'end' : 'start'}" fill="${s.color}">${fmtValue(v)}</text>`,
      );
    }
    if (p.series.length > 1) {
      // Legend in a row between the title and the plot.
      const lx = x0 + M.left + si * (pw / p.series.length);
      g.push(`<rect x="${lx}" y="${y0 + 28}" width="10" height="3" fill="${s.color}"/>`);
      g.push(`<text x="${lx + 14}" y="${y0 + 32}" fill="${s.color}">${esc(s.label)}</text>`);
    }
  });
  g.push('</g>');
  return g.join('\n');
}

function fmtTick(v: number): string {
  return v >= 1000 ? `${v / 1000}k` : v >= 1 ? String(v) : String(Number(v.toPrecision(1)));
}

function fmtValue(v: number): string {
  if (v >= 100) return Math.round(v).toLocaleString('en-US');
  if (v >= 10) return v.toFixed(1);
  return v.toPrecision(2);
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
