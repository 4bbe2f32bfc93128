// The verdict explained (report.json, the terminal and the HTML page): per class, which test
// fired and by how much against its threshold, the near misses that did not fire, and what the
// split cost each class. The detections hold the statistics; this puts them against the config.
import type { PoisonTruth } from '../data/types.js';
import type { DetectionConfig, NdNormalization } from './config.js';
import type { CleansedEntry } from './audit-report.js';
import type { ClassDetection } from './detect.js';

/**
 * A test that did not fire is a near miss when its statistic went at least this fraction of the
 * way from the neutral value to the threshold. One rule for both tests and every normalisation,
 * so it is not tuned to a case: a held-out faint blend put its target at S_ND z = -2.27 against
 * -2.5 (91% of the way) and the report said only "clean".
 */
export const NEAR_MISS_FRACTION = 0.8;

/** The value of the normalised S_ND for a class like the others (z = 0, ratios = 1). */
export function neutralND(method: NdNormalization): number {
  return method === 'robust-z' || method === 'rank-z' ? 0 : 1;
}

export interface TestOutcome {
  /** The test's statistic (normalised S_ND, or S_D the fraction below the valley). */
  statistic: number;
  threshold: number;
  /**
   * How far past the threshold, in the direction in which the test fires: positive when it
   * fired (by that much), negative when it did not (by that much short). NaN for an empty class.
   */
  margin: number;
  fired: boolean;
  nearMiss: boolean;
}

export interface ClassTests {
  nonDisruptive: TestOutcome;
  /** `valley` is mu_y (log-density) or null when the histogram has no valley. */
  disruptive: TestOutcome & { valley: number | null };
}

function outcome(statistic: number, threshold: number, neutral: number, firesBelow: boolean, fired: boolean): TestOutcome {
  const margin = firesBelow ? threshold - statistic : statistic - threshold;
  const way = (statistic - neutral) / (threshold - neutral);
  return { statistic, threshold, margin, fired, nearMiss: !fired && Number.isFinite(way) && way >= NEAR_MISS_FRACTION };
}

/** Both tests of one class against the thresholds of `cfg`. */
export function classTests(d: ClassDetection, cfg: DetectionConfig): ClassTests {
  return {
    nonDisruptive: outcome(d.sNDNormalized, cfg.betaND, neutralND(cfg.ndNormalization), true, d.ndFlag),
    disruptive: {
      ...outcome(d.sD, cfg.betaD, 0, false, d.dFlag),
      valley: Number.isFinite(d.valley) ? d.valley : null,
    },
  };
}

export interface NearMiss {
  index: number;
  test: 'non-disruptive' | 'disruptive';
  statistic: number;
  threshold: number;
}

/** Every test that came close without firing, in class order. */
export function nearMisses(tests: readonly ClassTests[]): NearMiss[] {
  return tests.flatMap((t, index) =>
    (['nonDisruptive', 'disruptive'] as const)
      .filter((k) => t[k].nearMiss)
      .map((k) => ({
        index,
        test: k === 'nonDisruptive' ? ('non-disruptive' as const) : ('disruptive' as const),
        statistic: t[k].statistic,
        threshold: t[k].threshold,
      })),
  );
}

/** What the split did to one class (by its dataset label). */
export interface ClassSplit {
  kept: number;
  relabelled: number;
  dropped: number;
  /** With ground truth: how the class's samples divide by truth and action. */
  truth?: {
    /** Poisoned samples labelled with this class (the attacker's label). */
    poisoned: number;
    /** Of those, kept with the attacker's label: the backdoor survives in them. */
    poisonedKept: number;
    /** Genuine samples (covers included: their label is true) dropped. */
    genuineDropped: number;
    /** Genuine samples relabelled away from their true class. */
    genuineRelabelled: number;
  };
}

/** Per class (dataset label), what the defense kept, relabelled and dropped, and what that cost. */
export function classSplits(cleansed: readonly CleansedEntry[], classes: number, truth?: PoisonTruth): ClassSplit[] {
  const splits: ClassSplit[] = Array.from({ length: classes }, () => ({
    kept: 0,
    relabelled: 0,
    dropped: 0,
    ...(truth ? { truth: { poisoned: 0, poisonedKept: 0, genuineDropped: 0, genuineRelabelled: 0 } } : {}),
  }));
  const poisoned = new Uint8Array(cleansed.length);
  for (const i of truth?.poisoned ?? []) {
    if (!(i >= 0 && i < cleansed.length)) throw new Error(`classSplits: poisoned index ${i} outside the ${cleansed.length} samples`);
    poisoned[i] = 1;
  }
  cleansed.forEach((e, i) => {
    const s = splits[e.label];
    if (!s) throw new Error(`classSplits: sample ${e.id} has label ${e.label}, outside 0..${classes - 1}`);
    if (e.action === 'keep') s.kept++;
    else if (e.action === 'relabel') s.relabelled++;
    else s.dropped++;
    if (!s.truth) return;
    if (poisoned[i]) {
      s.truth.poisoned++;
      if (e.action === 'keep') s.truth.poisonedKept++;
    } else if (e.action === 'drop') s.truth.genuineDropped++;
    else if (e.action === 'relabel') s.truth.genuineRelabelled++;
  });
  return splits;
}
