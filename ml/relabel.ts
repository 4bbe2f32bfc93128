// Split and relabel (method.md step 8). Inside each flagged class, samples are ranked by their
// poison score s; the alpha fraction at the poisoned end goes to D^_P, the alpha fraction at the
// other end is kept as clean, and the 1 - 2 * alpha in between is dropped as uncertain.
// Unflagged classes are kept whole.
//
// Which end is poisoned is the project's two-way reading of the paper (which states one
// direction only), and follows the class's detected kind:
// - non-disruptive: triggered samples still look like their source class, so another class's
//   flow explains them well and s is LOWEST. They are relabelled to the foreign class a
//   generative model finds likeliest: argmax_{y' != y} log p_{y'}(z) of the flows (the paper's
//   rule, relabel.model 'flows'), or of per-class Gaussians with one shared covariance fitted
//   on the samples kept as clean ('shared-gaussian', ml/class-gaussians.ts).
// - disruptive: the poisoned samples lie outside every clean class, so only the target's own
//   flow (which trained on them) explains them and s is HIGHEST. They are removed, not
//   relabelled: for clean-label attacks their label already is the true class.
// A class flagged by both tests is 'disruptive' (see ClassDetection.kind).
//
// Each entry's `side` (see SampleSide) follows the split, not the action: the poisoned end is
// 'poisoned' whether relabelled or removed, the other end 'clean', the middle 'uncertain', and
// unflagged classes 'clean'. Evaluation reads it instead of parsing `reason`.
import type { RelabelConfig } from './config.js';
import type { CleansedEntry } from './audit-report.js';
import { maxForeign } from './density.js';
import type { ClassDetection } from './detect.js';
import type { Matrix } from './matrix.js';

/** Chooses, for samples of a target class, the class each most likely came from. */
export interface ForeignClassModel {
  /** For each of `rows` (samples labelled y), a class other than y. */
  choose(rows: readonly number[], y: number): number[];
}

/** The paper's rule: argmax over the other classes of the flows' log densities (the density matrix). */
export function flowArgmax(density: Matrix): ForeignClassModel {
  return { choose: (rows, y) => rows.map((i) => maxForeign(density.data, i * density.cols, density.cols, y).index) };
}

/** How many samples of a class of `count` go to each end: round(alpha * count). */
export function splitSize(count: number, alpha: number): number {
  return Math.round(alpha * count);
}

/**
 * The split of every class and the relabelling of the non-disruptive targets' poisoned ends.
 * `foreign` builds the relabelling model from the rows the split kept as clean (default: the
 * flows' argmax over `density`, which needs none).
 */
export function splitAndRelabel(
  ids: readonly string[],
  labels: Int32Array,
  density: Matrix,
  scores: Float32Array,
  detections: readonly ClassDetection[],
  cfg: Pick<RelabelConfig, 'alpha'>,
  classNames?: readonly string[],
  foreign: (clean: readonly number[]) => ForeignClassModel = () => flowArgmax(density),
): CleansedEntry[] {
  const n = labels.length;
  if (ids.length !== n || scores.length !== n || density.rows !== n)
    throw new Error(`splitAndRelabel: ${ids.length} ids, ${n} labels, ${scores.length} scores and ${density.rows} density rows must agree`);
  if (!(cfg.alpha > 0 && cfg.alpha <= 0.5)) throw new Error(`relabel config: alpha must be in (0, 0.5], got ${cfg.alpha}`);
  const cols = density.cols;
  const name = (y: number) => (classNames?.[y] !== undefined ? `${classNames[y]} (${y})` : `class ${y}`);
  const pct = `${+(cfg.alpha * 100).toFixed(2)}%`;
  const byClass = new Map<number, ClassDetection>();
  for (const d of detections) byClass.set(d.index, d);

  const out: CleansedEntry[] = new Array(n);
  const members = new Map<number, number[]>();
  for (let i = 0; i < n; i++) {
    const y = labels[i];
    if (!(y >= 0 && y < cols)) throw new Error(`splitAndRelabel: label ${y} of sample ${i} out of range 0..${cols - 1}`);
    const det = byClass.get(y);
    if (!det || det.kind === 'clean') {
      out[i] = { id: ids[i], label: y, score: scores[i], action: 'keep', side: 'clean', reason: `${name(y)} not flagged: kept` };
      continue;
    }
    let list = members.get(y);
    if (!list) members.set(y, (list = []));
    list.push(i);
  }

  const toRelabel = new Map<number, number[]>();
  for (const [y, list] of members) {
    const kind = byClass.get(y)!.kind;
    // Ascending score, ties by input order, so the split is deterministic.
    list.sort((a, b) => scores[a] - scores[b] || a - b);
    const k = splitSize(list.length, cfg.alpha);
    const tests = byClass.get(y)!.ndFlag && byClass.get(y)!.dFlag ? ' (both tests fired)' : '';
    list.forEach((i, rank) => {
      const low = rank < k;
      const high = rank >= list.length - k;
      const base = { id: ids[i], label: y, score: scores[i] };
      if (kind === 'non-disruptive') {
        if (low) {
          // Relabelled below, once the model has the clean side of every class to fit on.
          let rows = toRelabel.get(y);
          if (!rows) toRelabel.set(y, (rows = []));
          rows.push(i);
        } else if (high) {
          out[i] = {
            ...base,
            action: 'keep',
            side: 'clean',
            reason: `non-disruptive target ${name(y)}: highest ${pct} poison score -> kept as clean`,
          };
        } else {
          out[i] = {
            ...base,
            action: 'drop',
            side: 'uncertain',
            reason: `non-disruptive target ${name(y)}: uncertain middle poison score -> dropped`,
          };
        }
      } else if (high) {
        out[i] = {
          ...base,
          action: 'drop',
          side: 'poisoned',
          reason: `disruptive target ${name(y)}${tests}: highest ${pct} poison score -> removed as poisoned`,
        };
      } else if (low) {
        out[i] = {
          ...base,
          action: 'keep',
          side: 'clean',
          reason: `disruptive target ${name(y)}${tests}: lowest ${pct} poison score -> kept as clean`,
        };
      } else {
        out[i] = {
          ...base,
          action: 'drop',
          side: 'uncertain',
          reason: `disruptive target ${name(y)}${tests}: uncertain middle poison score -> dropped`,
        };
      }
    });
  }
  if (toRelabel.size) {
    const model = foreign(out.flatMap((e, i) => (e?.side === 'clean' ? [i] : [])));
    for (const [y, rows] of toRelabel) {
      const to = model.choose(rows, y);
      rows.forEach((i, k) => {
        if (!(to[k] >= 0 && to[k] < cols && to[k] !== y))
          throw new Error(`splitAndRelabel: relabel model chose class ${to[k]} for sample ${i} of ${name(y)}`);
        out[i] = {
          id: ids[i],
          label: y,
          score: scores[i],
          action: 'relabel',
          side: 'poisoned',
          newLabel: to[k],
          reason: `non-disruptive target ${name(y)}: lowest ${pct} poison score -> relabelled to ${name(to[k])}`,
        };
      });
    }
  }
  return out;
}
