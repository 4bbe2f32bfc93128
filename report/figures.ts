// What the HTML report plots, computed from the audit's artifacts and aggregated so that the page
// stays small whatever the dataset: histograms are bin counts, the class-by-class matrix is
// means, and every list is capped with the number left out said on the page.
import type { PoisonTruth } from '../data/types.js';
import type { AuditReport, CleansedEntry } from '../ml/audit-report.js';
import { maxForeign } from '../ml/density.js';
import type { Matrix } from '../ml/matrix.js';
import { poisonScoreOf } from '../ml/score.js';

/** Caps, so that a thousand classes and a million samples still give a page that opens. */
export const PAGE_LIMITS = {
  /** Classes whose foreign-density histogram is drawn (flagged and near misses first). */
  histogramClasses: 12,
  /** Classes in the class-by-class density heatmap. */
  heatmapClasses: 30,
  /** Flagged classes with poison-score histograms and thumbnails. */
  flaggedClasses: 8,
  /** Thumbnails per flagged class: relabelled (or removed), dropped, kept. */
  thumbnails: { poisoned: 24, uncertain: 12, clean: 12 },
  /** Bins of the poison-score histogram. */
  scoreBins: 40,
} as const;

/** A histogram as bin counts over [lo, hi], equal widths. */
export interface Histogram {
  lo: number;
  hi: number;
  counts: number[];
}

export interface ForeignDensityFigure {
  index: number;
  name: string;
  /** Histogram of v = max foreign log-density over the class's samples, with the detection's bins. */
  histogram: Histogram;
  /** The valley mu_y, or null when the histogram has none. */
  valley: number | null;
  flagged: boolean;
  nearMiss: boolean;
}

/** Truth groups of a flagged class's samples; `all` when the set has no ground truth. */
export type TruthGroup = 'poisoned' | 'genuine' | 'cover' | 'all';

export interface PoisonScoreFigure {
  index: number;
  name: string;
  histograms: { group: TruthGroup; histogram: Histogram }[];
  /** Highest score on the poisoned side and lowest on the clean side (the alpha split lines). */
  poisonedUpTo: number | null;
  cleanFrom: number | null;
}

export interface DensityHeatmap {
  /** Class indices shown, in order (rows: samples labelled with the class; columns: flows). */
  classes: number[];
  /** mean[r][c]: mean log p_{classes[c]}(z) over samples labelled classes[r]. */
  mean: number[][];
  /** Total classes (more than shown when capped). */
  of: number;
}

export interface Thumbnail {
  /** Sample index in the dataset. */
  index: number;
  id: string;
  label: number;
  newLabel?: number;
  score: number;
  /** Ground truth, when the set was attacked here. */
  truth?: 'poisoned' | 'cover' | 'genuine';
}

export interface ClassThumbnails {
  index: number;
  name: string;
  /** By side of the split, the most telling first (lowest score = most poison-like). */
  groups: { side: 'poisoned' | 'uncertain' | 'clean'; action: string; shown: Thumbnail[]; of: number }[];
}

export interface ReportFigures {
  foreignDensity: ForeignDensityFigure[];
  /** How many classes have foreign-density histograms (all of them may not be shown). */
  foreignDensityOf: number;
  poisonScore: PoisonScoreFigure[];
  heatmap: DensityHeatmap;
  /** Relabelling flows old -> new label, largest first. */
  relabelFlows: { from: number; to: number; count: number }[];
  thumbnails: ClassThumbnails[];
  /** Flagged classes beyond the cap (no score histogram or thumbnails). */
  flaggedNotShown: number;
}

export interface FigureInput {
  report: AuditReport;
  /** log p_y(z_i), N x C. */
  density: Matrix;
  labels: Int32Array;
  ids: readonly string[];
  cleansed: readonly CleansedEntry[];
  truth?: PoisonTruth;
}

export function histogram(values: ArrayLike<number>, bins: number, range?: { lo: number; hi: number }): Histogram {
  let lo = range?.lo ?? Infinity;
  let hi = range?.hi ?? -Infinity;
  if (!range)
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (!Number.isFinite(v)) continue;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  if (!(hi >= lo)) return { lo: 0, hi: 0, counts: new Array<number>(bins).fill(0) };
  const counts = new Array<number>(bins).fill(0);
  const width = (hi - lo) / bins;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v) || v < lo || v > hi) continue;
    counts[width > 0 ? Math.min(bins - 1, Math.floor((v - lo) / width)) : 0]++;
  }
  return { lo, hi, counts };
}

export function reportFigures(input: FigureInput): ReportFigures {
  const { report, density, labels, ids, cleansed, truth } = input;
  const n = labels.length;
  const c = report.dataset.classes.length;
  if (density.rows !== n || density.cols !== c || cleansed.length !== n || ids.length !== n) {
    throw new Error(
      `report figures: ${n} labels, ${ids.length} ids, ${cleansed.length} cleansed entries and a ${density.rows} x ${density.cols} density matrix for ${c} classes do not agree`,
    );
  }
  const members: number[][] = Array.from({ length: c }, () => []);
  for (let i = 0; i < n; i++) members[labels[i]].push(i);
  const truthOf = truthLookup(n, truth);
  const name = (y: number) => report.dataset.classes[y] ?? String(y);
  const nearMiss = new Set(report.nearMisses.map((m) => m.index));
  const flagged = report.classes.filter((k) => k.flagged).map((k) => k.index);

  // Figure 3: flagged classes and near misses first, then the classes closest to the disruptive
  // threshold, up to the cap.
  const byInterest = [...report.classes].sort(
    (a, b) =>
      Number(b.flagged) - Number(a.flagged) ||
      Number(nearMiss.has(b.index)) - Number(nearMiss.has(a.index)) ||
      b.sD - a.sD ||
      a.index - b.index,
  );
  const foreign = byInterest
    .slice(0, PAGE_LIMITS.histogramClasses)
    .sort((a, b) => a.index - b.index)
    .map((k): ForeignDensityFigure => {
      // v only for the class's own rows: a million samples x a thousand flows stay cheap.
      const values = members[k.index].map((i) => maxForeign(density.data, i * density.cols, density.cols, k.index).value);
      return {
        index: k.index,
        name: k.name,
        histogram: histogram(values, report.config.detection.bins),
        valley: k.tests.disruptive.valley,
        flagged: k.flagged,
        nearMiss: nearMiss.has(k.index),
      };
    });

  const shownFlagged = flagged.slice(0, PAGE_LIMITS.flaggedClasses);
  // Poison scores (ml/score.ts) of the drawn classes' rows only: the report runs in every audit,
  // and the whole N x C pass would cost a million-sample, thousand-class audit seconds each time.
  const scores = new Float32Array(n);
  // Reports written before scoreReference existed used the paper's maximum.
  for (const y of shownFlagged)
    for (const i of members[y]) scores[i] = poisonScoreOf(density, i, y, report.config.relabel.scoreReference ?? 'max-foreign');
  const poisonScore = shownFlagged.map((y): PoisonScoreFigure => {
    const rows = members[y];
    const values = rows.map((i) => scores[i]);
    const range = histogram(values, 1);
    const groups: TruthGroup[] = truth ? ['poisoned', 'cover', 'genuine'] : ['all'];
    const histograms = groups
      .map((group) => ({
        group,
        histogram: histogram(
          rows.filter((i) => group === 'all' || truthOf(i) === group).map((i) => scores[i]),
          PAGE_LIMITS.scoreBins,
          range,
        ),
      }))
      .filter((h) => h.group === 'all' || h.histogram.counts.some((x) => x > 0));
    let poisonedUpTo: number | null = null;
    let cleanFrom: number | null = null;
    for (const i of rows) {
      const side = cleansed[i].side;
      if (side === 'poisoned') poisonedUpTo = Math.max(poisonedUpTo ?? -Infinity, scores[i]);
      if (side === 'clean') cleanFrom = Math.min(cleanFrom ?? Infinity, scores[i]);
    }
    return { index: y, name: name(y), histograms, poisonedUpTo, cleanFrom };
  });

  const flows = new Map<string, number>();
  for (const e of cleansed)
    if (e.action === 'relabel' && e.newLabel !== undefined)
      flows.set(`${e.label}>${e.newLabel}`, (flows.get(`${e.label}>${e.newLabel}`) ?? 0) + 1);
  const relabelFlows = [...flows.entries()]
    .map(([k, count]) => {
      const [from, to] = k.split('>').map(Number);
      return { from, to, count };
    })
    .sort((a, b) => b.count - a.count || a.from - b.from || a.to - b.to);

  const thumbnails = shownFlagged.map((y): ClassThumbnails => {
    const rows = [...members[y]].sort((a, b) => scores[a] - scores[b] || a - b);
    const groups = (['poisoned', 'uncertain', 'clean'] as const).map((side) => {
      const all = rows.filter((i) => cleansed[i].side === side);
      // The clean end is shown from its low-score edge too: the samples closest to the split.
      const shown = all.slice(0, PAGE_LIMITS.thumbnails[side]).map((i): Thumbnail => {
        const e = cleansed[i];
        const t = truthOf(i);
        return {
          index: i,
          id: ids[i],
          label: e.label,
          ...(e.newLabel !== undefined ? { newLabel: e.newLabel } : {}),
          score: scores[i],
          ...(t !== 'all' ? { truth: t } : {}),
        };
      });
      const action =
        side === 'clean'
          ? 'kept'
          : side === 'uncertain'
            ? 'dropped'
            : all.some((i) => cleansed[i].action === 'relabel')
              ? 'relabelled'
              : 'removed';
      return { side, action, shown, of: all.length };
    });
    return { index: y, name: name(y), groups: groups.filter((g) => g.of > 0) };
  });

  return {
    foreignDensity: foreign,
    foreignDensityOf: c,
    poisonScore,
    heatmap: densityHeatmap(density, members, flagged, relabelFlows, c),
    relabelFlows,
    thumbnails,
    flaggedNotShown: flagged.length - shownFlagged.length,
  };
}

/** Ground truth per sample index: poisoned, cover or genuine ('all' without truth). */
function truthLookup(n: number, truth: PoisonTruth | undefined): (i: number) => TruthGroup {
  if (!truth) return () => 'all';
  const group = new Uint8Array(n); // 0 genuine, 1 poisoned, 2 cover
  for (const i of truth.poisoned) if (i >= 0 && i < n) group[i] = 1;
  for (const i of truth.cover ?? []) if (i >= 0 && i < n) group[i] = 2;
  return (i) => (group[i] === 1 ? 'poisoned' : group[i] === 2 ? 'cover' : 'genuine');
}

/**
 * Mean log-density of each class's samples under each class's flow. Capped to the flagged
 * classes, the destinations of relabelled samples, then the lowest indices.
 */
function densityHeatmap(density: Matrix, members: number[][], flagged: number[], flows: { to: number }[], c: number): DensityHeatmap {
  const chosen = new Set<number>();
  for (const y of [...flagged, ...flows.map((f) => f.to), ...Array.from({ length: c }, (_, y) => y)]) {
    if (chosen.size >= PAGE_LIMITS.heatmapClasses) break;
    chosen.add(y);
  }
  const classes = [...chosen].sort((a, b) => a - b);
  const mean = classes.map((r) =>
    classes.map((col) => {
      const rows = members[r];
      if (!rows.length) return NaN;
      let s = 0;
      for (const i of rows) s += density.data[i * density.cols + col];
      return s / rows.length;
    }),
  );
  return { classes, mean, of: c };
}
