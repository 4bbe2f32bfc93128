// Target-class detection (method.md step 6). Two tests on the density matrix; a class is a
// target if either fires.
//
// Non-disruptive: S_ND(y) = mean NLL of flow y over the samples labelled != y. The flow of a
// target class has also learned triggered images of the other classes, so it explains foreign
// samples unusually well: S_ND(y) is low. Raw NLLs are not comparable across classes (a class
// with spread-out features has a broad flow that gives everything moderate density), so the
// score is put on a cross-class scale chosen by `DetectionConfig.ndNormalization`:
//   'median-ratio'  S_ND(y) / median_{y' != y} S_ND(y'). Needs positive NLLs.
//   'own-gap'       g(y) = S_ND(y) - own(y), with own(y) the mean NLL of flow y over its own
//                   class; normalised as g(y) / median_{y' != y} g(y'). Subtracting the flow's
//                   own NLL removes how sharp or broad the class is, and poisoning moves both
//                   terms toward each other (foreign down, own up), so the gap shrinks twice.
//   'robust-z'      (S_ND(y) - median_{y' != y} S_ND) / (1.4826 * MAD_{y' != y} S_ND).
//   'rank-z'        the same robust z-score of R(y), the mean over foreign samples of where flow
//                   y ranks among the flows foreign to that sample (0: it explains the sample
//                   best of them, 1: worst). The question is the paper's (does flow y explain
//                   other classes' samples unusually well?), asked per sample: a mean of log
//                   densities is dominated by a few far samples and by how broad the class is
//                   (a broad clean class gives everything moderate density), a rank is bounded
//                   and compares flows on the same sample. Measured on SimCLR features of
//                   CIFAR-10 at 300 per class (docs/nd-normalization.md): in a clean set
//                   airplane's robust-z reached -3.70, its rank-z +0.77.
// Each reference statistic leaves the class itself out, so a target cannot mask itself.
// y is flagged when the normalised value is below `betaND` (-2.5). The default is 'rank-z';
// 'robust-z' was the default before it, and flagged the target and no clean class on the
// first SimCLR measurements (docs/nd-normalization.md); 'own-gap'
// did best on the synthetic and raw-pixel stand-ins but flagged a clean class on every SimCLR
// run (measurements in docs/nd-normalization.md). 'median-ratio' depends on the feature units
// (features are standardised in ml/features.ts, which shifts every NLL by a constant).
//
// Disruptive: v_y(z) = max_{y' != y} log p_{y'}(z). A disruptively poisoned class has a mode
// of samples that no other class explains (low v) besides its main mode. See `findValley` for
// how the threshold mu_y is placed; S_D(y) = fraction of the class with v < mu_y, flagged when
// above `betaD`.
import type { DetectionConfig, NdNormalization } from './config.js';
import type { ClassKind } from './audit-report.js';
import { foreignDensity } from './density.js';
import type { Matrix } from './matrix.js';

export interface ClassDetection {
  index: number;
  count: number;
  /** Mean NLL of this class's flow over samples of the other classes (nats). */
  sND: number;
  /** Mean NLL of this class's flow over its own samples (nats); used by 'own-gap'. */
  ownNLL: number;
  /** R(y): mean rank of this flow among the flows foreign to each foreign sample (0 best, 1 worst); used by 'rank-z'. */
  foreignRank: number;
  /** sND on the cross-class scale of `ndNormalization`; NaN when undefined (empty class). */
  sNDNormalized: number;
  /** Fraction of the class whose maximum foreign density is below `valley`. */
  sD: number;
  /** mu_y, in log-density units; -Infinity when the histogram has no valley. */
  valley: number;
  ndFlag: boolean;
  dFlag: boolean;
  /**
   * 'disruptive' whenever the disruptive test fires, even if the non-disruptive one fires too:
   * a low-foreign-density mode cannot come from triggered samples that still resemble their
   * source class (those have HIGH foreign density), while a disruptive cluster broadens the
   * target's flow and can lower its foreign NLL as a side effect. Treating a disruptive class
   * as non-disruptive would keep the poisoned cluster (highest score) as clean.
   */
  kind: ClassKind;
}

/** A detection with only its verdict set, statistics zero: a target known beforehand (benchmarks' oracle, tests). */
export function knownVerdict(index: number, kind: ClassKind): ClassDetection {
  return {
    index,
    count: 0,
    sND: 0,
    ownNLL: 0,
    foreignRank: 0,
    sNDNormalized: 0,
    sD: 0,
    valley: -Infinity,
    ndFlag: kind === 'non-disruptive',
    dFlag: kind === 'disruptive',
    kind,
  };
}

/** Raw non-disruptive statistics per class (see ClassDetection for each). */
export interface NdStatistics {
  sND: number[];
  ownNLL: number[];
  foreignRank: number[];
  count: number[];
}

/**
 * Raw non-disruptive statistics per class: foreign and own mean NLL, mean foreign rank, and
 * class sizes (all samples). Samples marked in `exclude` take no part in the means.
 */
export function ndStatistics(density: Matrix, labels: Int32Array, exclude?: Uint8Array): NdStatistics {
  const { rows, cols, data } = density;
  if (labels.length !== rows) throw new Error(`detect: ${labels.length} labels for ${rows} density rows`);
  if (exclude && exclude.length !== rows) throw new Error(`detect: exclusion mask has ${exclude.length} entries for ${rows} rows`);
  const foreignSum = new Float64Array(cols);
  const ownSum = new Float64Array(cols);
  const count = new Array<number>(cols).fill(0);
  const used = new Array<number>(cols).fill(0);
  let usedTotal = 0;
  const colSum = new Float64Array(cols);
  const rankSum = new Float64Array(cols);
  const order = new Int32Array(cols);
  for (let i = 0; i < rows; i++) {
    const y = labels[i];
    if (!(y >= 0 && y < cols)) throw new Error(`detect: label ${y} of sample ${i} out of range 0..${cols - 1}`);
    count[y]++;
    if (exclude?.[i]) continue;
    used[y]++;
    usedTotal++;
    for (let c = 0; c < cols; c++) {
      const v = data[i * cols + c];
      if (!Number.isFinite(v)) throw new Error(`detect: density[${i}][${c}] is ${v}`);
      colSum[c] += v;
    }
    ownSum[y] += data[i * cols + y];
    addForeignRanks(data, i, cols, y, rankSum, order);
  }
  const sND: number[] = [];
  const ownNLL: number[] = [];
  const foreignRank: number[] = [];
  for (let c = 0; c < cols; c++) {
    foreignSum[c] = colSum[c] - ownSum[c];
    const foreign = usedTotal - used[c];
    sND.push(foreign > 0 ? -foreignSum[c] / foreign : NaN);
    ownNLL.push(used[c] > 0 ? -ownSum[c] / used[c] : NaN);
    foreignRank.push(foreign > 0 ? rankSum[c] / foreign : NaN);
  }
  return { sND, ownNLL, foreignRank, count };
}

/**
 * Adds, for each flow c foreign to sample i (label y), its rank among those flows on that
 * sample to rankSum[c]: 0 for the highest density, 1 for the lowest, ties sharing their mean
 * rank. With a single foreign flow (two classes) every rank is 0.5: it carries no comparison.
 * Sorts the sample's foreign columns (`order` is scratch of length cols), so a thousand-class
 * audit costs C log C per sample, not C^2.
 */
function addForeignRanks(
  data: Float32Array | Float64Array,
  i: number,
  cols: number,
  y: number,
  rankSum: Float64Array,
  order: Int32Array,
): void {
  const m = cols - 1;
  const row = i * cols;
  if (m === 1) {
    rankSum[y === 0 ? 1 : 0] += 0.5;
    return;
  }
  let k = 0;
  for (let c = 0; c < cols; c++) if (c !== y) order[k++] = c;
  const foreign = order.subarray(0, m).sort((a, b) => data[row + b] - data[row + a]);
  // Runs of equal densities share the mean of their positions.
  for (let start = 0; start < m;) {
    let end = start + 1;
    while (end < m && data[row + foreign[end]] === data[row + foreign[start]]) end++;
    const rank = (start + end - 1) / 2 / (m - 1);
    for (let j = start; j < end; j++) rankSum[foreign[j]] += rank;
    start = end;
  }
}

function median(xs: number[]): number {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** S_ND of every class on the cross-class scale of `method` (each class compared with the others). */
export function normaliseND(stats: Pick<NdStatistics, 'sND' | 'ownNLL' | 'foreignRank'>, method: NdNormalization): number[] {
  const { sND, ownNLL, foreignRank } = stats;
  const others = (xs: readonly number[], y: number) => xs.filter((_, c) => c !== y);
  switch (method) {
    case 'median-ratio':
      return sND.map((s, y) => {
        const ref = median(others(sND, y));
        if (Number.isFinite(s) && Number.isFinite(ref) && ref <= 0)
          throw new Error(
            `detect: 'median-ratio' needs positive foreign NLLs, but the other classes' median is ${ref.toFixed(3)}; use 'own-gap' or 'robust-z'`,
          );
        return s / ref;
      });
    case 'own-gap': {
      const gap = sND.map((s, y) => s - ownNLL[y]);
      return gap.map((g, y) => {
        const ref = median(others(gap, y));
        if (Number.isFinite(g) && Number.isFinite(ref) && ref <= 0)
          throw new Error(
            `detect: 'own-gap' needs flows that fit their own class better than the others (median gap ${ref.toFixed(3)} nats)`,
          );
        return g / ref;
      });
    }
    case 'robust-z':
      return robustZ(sND);
    case 'rank-z':
      return robustZ(foreignRank);
    default:
      throw new Error(`detect: unknown ndNormalization '${String(method)}' (expected median-ratio, own-gap, robust-z or rank-z)`);
  }
}

/** (x(y) - median_{y' != y} x) / (1.4826 * MAD_{y' != y} x) for every class y. */
function robustZ(xs: readonly number[]): number[] {
  return xs.map((x, y) => {
    const rest = xs.filter((_, c) => c !== y);
    const med = median(rest);
    // 1.4826 * MAD estimates a standard deviation; floored so identical classes give finite z.
    const mad = 1.4826 * median(rest.map((r) => Math.abs(r - med)));
    const scale = Math.max(mad, 1e-6 * Math.max(1, Math.abs(med)));
    return (x - med) / scale;
  });
}

export interface Valley {
  /** mu: centre of the valley bin, in the units of the values; -Infinity when there is none. */
  valley: number;
  /** Fraction of the values below `valley`. */
  fraction: number;
  /** Index of the valley bin, -1 when none. */
  bin: number;
  /** The raw histogram (for reports and plots). */
  histogram: number[];
}

/**
 * The valley between the left mode and the main mode of a histogram of `values`.
 *
 * 1. `bins` equal-width bins over [min, max] of the values, so the axis is scaled to [0, 1].
 * 2. Counts smoothed with a [1, 2, 1] / 4 kernel (zero beyond the ends): one-bin noise
 *    fluctuations should not look like valleys.
 * 3. Candidates: interior bins whose centre lies left of `lambda` on the [0, 1] axis (bins
 *    1..21 for 30 bins, lambda 0.75).
 * 4. A candidate b needs mass on both sides: L = highest smoothed bin left of b, R = highest
 *    right of b; its depth is min(L, R) - h(b). It must be a real valley: h(b) <= min(L, R) / 2
 *    (a dip on a rising flank has L ~ h(b) and fails), and deeper than counting noise,
 *    depth >= 2 * sqrt(min(L, R) + h(b)) (about 3 standard deviations of the difference of two
 *    smoothed Poisson counts; without it a sparse left tail of a few hundred samples shows
 *    "valleys" between bins of 1-3 samples that put 5-6% of a clean class below mu).
 *    The deepest candidate wins, and among equally deep ones (a run of empty bins between two
 *    modes) the middle one.
 *
 * This fixes the plain "argmin left of lambda": on a unimodal histogram the argmin is an empty
 * far-left tail bin (any b with no left mode has depth <= 0 here, so no valley), and on a
 * bimodal one an empty bin left of the poisoned mode loses to the valley between the modes
 * because its left side (a few outliers) is lower than the poisoned mode.
 */
export function findValley(values: ArrayLike<number>, bins: number, lambda: number): Valley {
  if (!Number.isInteger(bins) || bins < 3) throw new Error(`findValley: bins must be an integer >= 3, got ${bins}`);
  if (!(lambda > 0 && lambda <= 1)) throw new Error(`findValley: lambda must be in (0, 1], got ${lambda}`);
  const none = (histogram: number[]): Valley => ({ valley: -Infinity, fraction: 0, bin: -1, histogram });
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) throw new Error(`findValley: value ${i} is ${v}`);
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const hist = new Array<number>(bins).fill(0);
  if (!(hi > lo)) return none(hist);
  const width = (hi - lo) / bins;
  for (let i = 0; i < values.length; i++) hist[Math.min(bins - 1, Math.floor((values[i] - lo) / width))]++;
  const smooth = hist.map((h, b) => ((b > 0 ? hist[b - 1] : 0) + 2 * h + (b < bins - 1 ? hist[b + 1] : 0)) / 4);
  const leftMax = new Array<number>(bins).fill(0);
  for (let b = 1; b < bins; b++) leftMax[b] = Math.max(leftMax[b - 1], smooth[b - 1]);
  const rightMax = new Array<number>(bins).fill(0);
  for (let b = bins - 2; b >= 0; b--) rightMax[b] = Math.max(rightMax[b + 1], smooth[b + 1]);
  let best = 0;
  let tied: number[] = [];
  for (let b = 1; b < bins - 1 && (b + 0.5) / bins <= lambda; b++) {
    const rim = Math.min(leftMax[b], rightMax[b]);
    const depth = rim - smooth[b];
    if (!(smooth[b] <= rim / 2) || depth < 2 * Math.sqrt(rim + smooth[b])) continue;
    if (depth > best + 1e-9) {
      best = depth;
      tied = [b];
    } else if (depth > 0 && Math.abs(depth - best) <= 1e-9) tied.push(b);
  }
  if (!tied.length) return none(hist);
  const bin = tied[(tied.length - 1) >> 1];
  const valley = lo + (bin + 0.5) * width;
  let below = 0;
  for (let i = 0; i < values.length; i++) if (values[i] < valley) below++;
  return { valley, fraction: below / values.length, bin, histogram: hist };
}

function validateDetectionConfig(cfg: DetectionConfig): void {
  if (!Number.isFinite(cfg.betaND)) throw new Error(`detection config: betaND must be a number, got ${cfg.betaND}`);
  if (!(cfg.betaD >= 0 && cfg.betaD < 1)) throw new Error(`detection config: betaD must be in [0, 1), got ${cfg.betaD}`);
}

/** Both tests for every class of the density matrix (N x C, log p_y(z_i)). */
/**
 * Both tests for every class of the density matrix (N x C, log p_y(z_i)).
 *
 * The disruptive test runs first, and the samples it finds below the valley of a flagged class
 * are left out of the non-disruptive statistics: they lie outside every class, so each clean
 * flow gives them a huge NLL that depends mostly on how its couplings extrapolate, and a few
 * dozen of them dominate the mean foreign NLL of every class (measured: a clean class's own-gap
 * ratio fell from ~1 to 0.18 next to a far cluster). Without a disruptive flag nothing changes.
 */
export function detectTargets(density: Matrix, labels: Int32Array, cfg: DetectionConfig): ClassDetection[] {
  validateDetectionConfig(cfg);
  const cols = density.cols;
  if (cols < 2) throw new Error(`detect: density matrix has ${cols} class column(s), need >= 2`);
  if (labels.length !== density.rows) throw new Error(`detect: ${labels.length} labels for ${density.rows} density rows`);
  const members: number[][] = Array.from({ length: cols }, () => []);
  for (let i = 0; i < labels.length; i++) {
    const y = labels[i];
    if (!(y >= 0 && y < cols)) throw new Error(`detect: label ${y} of sample ${i} out of range 0..${cols - 1}`);
    members[y].push(i);
  }
  const outliers = new Uint8Array(labels.length);
  const disruptive = members.map((rows, y) => {
    if (!rows.length) return { valley: -Infinity, fraction: 0, dFlag: false };
    const v = foreignDensity(density, y);
    const { valley, fraction } = findValley(
      rows.map((i) => v[i]),
      cfg.bins,
      cfg.lambda,
    );
    const dFlag = fraction > cfg.betaD;
    if (dFlag) for (const i of rows) if (v[i] < valley) outliers[i] = 1;
    return { valley, fraction, dFlag };
  });
  const stats = ndStatistics(density, labels, outliers);
  const { sND, ownNLL, foreignRank, count } = stats;
  const normalized = normaliseND(stats, cfg.ndNormalization);
  return sND.map((s, y) => {
    const { valley, fraction, dFlag } = disruptive[y];
    const ndFlag = count[y] > 0 && normalized[y] < cfg.betaND;
    const kind: ClassKind = dFlag ? 'disruptive' : ndFlag ? 'non-disruptive' : 'clean';
    return {
      index: y,
      count: count[y],
      sND: s,
      ownNLL: ownNLL[y],
      foreignRank: foreignRank[y],
      sNDNormalized: normalized[y],
      sD: fraction,
      valley,
      ndFlag,
      dFlag,
      kind,
    };
  });
}
