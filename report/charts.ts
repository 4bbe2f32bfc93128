// The report's charts as static SVG, drawn by Observable Plot on a server-side DOM (linkedom).
// Plot rather than hand-built SVG: axes, scales, legends and ARIA labels come from a maintained
// library; rather than Vega-Lite: a fraction of the size and no runtime to compile specs.
// Every chart comes with a text alternative that says what it shows in numbers.
import * as Plot from '@observablehq/plot';
import { parseHTML } from 'linkedom';
import type { AuditReport } from '../ml/audit-report.js';
import type { DensityHeatmap, ForeignDensityFigure, Histogram, PoisonScoreFigure, TruthGroup } from './figures.js';

export interface Chart {
  /** Self-contained SVG (or a <figure> holding a legend and the SVG). */
  html: string;
  /** Text alternative: what the chart shows, in words and numbers. */
  alt: string;
}

const { document } = parseHTML('<!doctype html><html><body></body></html>');
// Plot types its `document` option as the browser's Document; linkedom implements the parts Plot uses.
const doc = document as unknown as Document;

/** Above this many classes the per-class charts become distributions with the flagged classes named. */
const BAR_CLASSES = 40;

const fmt = (x: number, digits = 2): string => (Number.isFinite(x) ? x.toFixed(digits) : String(x));

function render(options: Plot.PlotOptions, id: string, alt: string): Chart {
  const el = Plot.plot({ ...options, document: doc, className: `chart-${id}`, ariaLabel: alt }) as unknown as Element;
  return { html: el.outerHTML, alt };
}

function bins(h: Histogram): { x1: number; x2: number }[] {
  const w = (h.hi - h.lo) / h.counts.length;
  return h.counts.map((_, b) => ({ x1: h.lo + b * w, x2: h.lo + (b + 1) * w }));
}

interface TestRow {
  name: string;
  value: number;
  fired: boolean;
}

/**
 * One test's statistic per class against its threshold: bars up to BAR_CLASSES classes, else the
 * distribution over classes with the classes that fired named. Fired classes are labelled in
 * text as well as colour, and a tick marks every class (a class at 0 is visibly there).
 */
function testChart(
  id: string,
  rows: TestRow[],
  threshold: number,
  label: string,
  digits: number,
  alt: string,
  domain?: [number, number],
): Chart {
  const fired = rows.filter((r) => r.fired);
  const rule = { stroke: '#b00', strokeDasharray: '5 3' };
  if (rows.length <= BAR_CLASSES)
    return render(
      {
        height: 260,
        marginBottom: 60,
        x: { label: null, tickRotate: -35, domain: rows.map((r) => r.name) },
        y: { label, grid: true, ...(domain ? { domain } : {}) },
        marks: [
          Plot.barY(rows, {
            x: 'name',
            y: 'value',
            fill: (r: TestRow) => (r.fired ? 'flagged' : 'not flagged'),
            title: (r: TestRow) => `${r.name}: ${fmt(r.value, digits)}`,
          }),
          Plot.tickY(rows, { x: 'name', y: 'value', strokeWidth: 2 }),
          Plot.text(fired, { x: 'name', y: 0, text: () => 'flagged', dy: -8, fill: 'currentColor' }),
          Plot.ruleY([threshold], rule),
          Plot.ruleY([0]),
        ],
        color: { domain: ['flagged', 'not flagged'], range: ['#c0392b', '#8aa1b1'], legend: true },
      },
      id,
      alt,
    );
  return render(
    {
      height: 240,
      x: { label, grid: true },
      y: { label: 'classes' },
      marks: [
        Plot.rectY(rows, Plot.binX({ y: 'count' }, { x: 'value' })),
        Plot.ruleX([threshold], rule),
        Plot.text(fired, { x: 'value', y: 0, text: 'name', dy: -8, rotate: -60, textAnchor: 'start' }),
        Plot.ruleY([0]),
      ],
    },
    id,
    alt,
  );
}

/** Normalised S_ND per class with the betaND line (the non-disruptive test fires below it). */
export function ndChart(report: AuditReport): Chart {
  const { betaND, ndNormalization } = report.config.detection;
  const rows = report.classes.map((k) => ({ name: k.name, value: k.sNDNormalized, fired: k.tests.nonDisruptive.fired }));
  const fired = rows.filter((r) => r.fired).map((r) => `${r.name} (${fmt(r.value)})`);
  const lowest = [...rows].filter((r) => Number.isFinite(r.value)).sort((a, b) => a.value - b.value)[0];
  const alt =
    `Normalised S_ND (${ndNormalization}) of ${rows.length} classes against the threshold ${betaND}: ` +
    (fired.length
      ? `below it ${fired.join(', ')}`
      : `none below it; lowest ${lowest ? `${lowest.name} at ${fmt(lowest.value)}` : 'undefined'}`) +
    '.';
  return testChart('snd', rows, betaND, `normalised S_ND (${ndNormalization}); flagged below ${betaND}`, 2, alt);
}

/** S_D (fraction below the valley) per class with the betaD line (the disruptive test fires above it). */
export function sdChart(report: AuditReport): Chart {
  const { betaD } = report.config.detection;
  const rows = report.classes.map((k) => ({ name: k.name, value: k.sD, fired: k.tests.disruptive.fired }));
  const fired = rows.filter((r) => r.fired).map((r) => `${r.name} (${fmt(r.value, 3)})`);
  const highest = [...rows].sort((a, b) => b.value - a.value)[0];
  const alt =
    `S_D, the fraction of each class below the valley of its foreign-density histogram, for ${rows.length} classes against the threshold ${betaD}: ` +
    (fired.length ? `above it ${fired.join(', ')}` : `none above it; highest ${highest.name} at ${fmt(highest.value, 3)}`) +
    '.';
  return testChart('sd', rows, betaD, `S_D; flagged above ${betaD}`, 3, alt, [0, Math.max(betaD * 2, ...rows.map((r) => r.value))]);
}

/** Figure 3 of the paper for one class: the histogram of v with the valley mu marked. */
export function foreignDensityChart(f: ForeignDensityFigure): Chart {
  const h = f.histogram;
  const total = h.counts.reduce((a, b) => a + b, 0);
  const below = f.valley === null ? 0 : bins(h).reduce((s, b, i) => s + (b.x2 <= (f.valley as number) ? h.counts[i] : 0), 0);
  const alt =
    `${f.name}: histogram of the maximum foreign log-density of its ${total} samples, from ${fmt(h.lo, 1)} to ${fmt(h.hi, 1)}; ` +
    (f.valley === null ? 'no valley found.' : `valley mu at ${fmt(f.valley, 1)}, about ${below} samples below it.`);
  const data = bins(h).map((b, i) => ({ ...b, count: h.counts[i] }));
  return render(
    {
      width: 260,
      height: 150,
      marginLeft: 36,
      x: { label: 'max foreign log-density', labelOffset: 28, ticks: 4 },
      y: { label: null, ticks: 3 },
      marks: [
        Plot.rectY(data, { x1: 'x1', x2: 'x2', y: 'count', fill: f.flagged ? '#c0392b' : '#8aa1b1', inset: 0.3 }),
        ...(f.valley === null
          ? []
          : [
              Plot.ruleX([f.valley], { stroke: 'black', strokeDasharray: '4 2' }),
              Plot.text([f.valley], { x: (d: number) => d, frameAnchor: 'top', text: () => 'mu', dy: 4, dx: 8 }),
            ]),
        Plot.ruleY([0]),
      ],
    },
    `fd-${f.index}`,
    alt,
  );
}

const GROUP_STYLE: Record<TruthGroup, { label: string; color: string }> = {
  poisoned: { label: 'poisoned (truth)', color: '#c0392b' },
  cover: { label: 'cover (truth)', color: '#e69f00' },
  genuine: { label: 'genuine (truth)', color: '#4a7fb0' },
  all: { label: 'samples', color: '#8aa1b1' },
};

/** Figure 4 of the paper for one flagged class: poison scores, by ground truth, with the split lines. */
export function poisonScoreChart(f: PoisonScoreFigure): Chart {
  const rows = f.histograms.flatMap(({ group, histogram }) =>
    bins(histogram).map((b, i) => ({ ...b, count: histogram.counts[i], group: GROUP_STYLE[group].label })),
  );
  const groups = f.histograms.map((h) => `${h.histogram.counts.reduce((a, b) => a + b, 0)} ${GROUP_STYLE[h.group].label}`);
  const lines = [
    ...(f.poisonedUpTo !== null ? [{ x: f.poisonedUpTo, text: 'poisoned side ends' }] : []),
    ...(f.cleanFrom !== null ? [{ x: f.cleanFrom, text: 'kept from here' }] : []),
  ];
  const alt =
    `${f.name}: histogram of poison scores (own minus best foreign log-density; low = poison-like) of ${groups.join(', ')}` +
    (lines.length ? `; split lines at ${lines.map((l) => `${fmt(l.x, 1)} (${l.text})`).join(' and ')}` : '') +
    '.';
  return render(
    {
      width: 560,
      height: 220,
      x: { label: 'poison score s = log p_y(z) - max foreign log p(z)' },
      y: { label: 'samples', grid: true },
      color: {
        domain: f.histograms.map((h) => GROUP_STYLE[h.group].label),
        range: f.histograms.map((h) => GROUP_STYLE[h.group].color),
        legend: true,
      },
      marks: [
        Plot.rectY(rows, Plot.stackY({ x1: 'x1', x2: 'x2', y: 'count', fill: 'group', inset: 0.3 })),
        Plot.ruleX(lines, { x: 'x', stroke: 'black', strokeDasharray: '5 3' }),
        Plot.text(lines, { x: 'x', text: 'text', frameAnchor: 'top', dy: 4, dx: 4, textAnchor: 'start' }),
        Plot.ruleY([0]),
      ],
    },
    `ps-${f.index}`,
    alt,
  );
}

/** Mean log-density of each class's samples (rows) under each class's flow (columns). */
export function densityHeatmapChart(h: DensityHeatmap, classNames: readonly string[]): Chart {
  const name = (y: number) => classNames[y] ?? String(y);
  const cells = h.classes.flatMap((r, i) => h.classes.map((c, j) => ({ samples: name(r), flow: name(c), v: h.mean[i][j] })));
  // The strongest foreign flow per row: where that class's samples would be relabelled.
  const nearest = h.classes.map((r, i) => {
    let best = -1;
    h.classes.forEach((c, j) => {
      if (c !== r && (best < 0 || h.mean[i][j] > h.mean[i][best])) best = j;
    });
    return `${name(r)} -> ${best < 0 ? 'none' : name(h.classes[best])}`;
  });
  const alt =
    `Mean log-density of the samples of ${h.classes.length}${h.of > h.classes.length ? ` of ${h.of}` : ''} classes (rows) under each class's flow (columns); ` +
    `nearest foreign flow per class: ${nearest.join(', ')}.`;
  const small = h.classes.length <= 12;
  return render(
    {
      width: Math.max(360, 60 + h.classes.length * 36),
      height: Math.max(260, 80 + h.classes.length * 24),
      marginLeft: 90,
      marginBottom: 70,
      padding: 0.03,
      x: { label: 'flow of class', tickRotate: -35, domain: h.classes.map(name) },
      y: { label: 'samples labelled', domain: h.classes.map(name) },
      color: { type: 'quantize', n: 7, scheme: 'blues', label: 'mean log-density (nats)', legend: true },
      marks: [
        Plot.cell(cells, {
          x: 'flow',
          y: 'samples',
          fill: 'v',
          title: (d: (typeof cells)[number]) => `${d.samples} under ${d.flow}: ${fmt(d.v, 1)}`,
        }),
        ...(small
          ? [
              Plot.text(cells, {
                x: 'flow',
                y: 'samples',
                text: (d: (typeof cells)[number]) => fmt(d.v, 0),
                fill: 'black',
                stroke: 'white',
                strokeWidth: 2,
                paintOrder: 'stroke',
              }),
            ]
          : []),
      ],
    },
    'heatmap',
    alt,
  );
}
