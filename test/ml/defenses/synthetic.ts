// Synthetic features with known answers for the baseline defenses' tests: well-separated
// Gaussian classes, one of them carrying a planted 10% cluster (what a trigger does to a target
// class's features), and a few samples of one class carrying another class's label.
import { defaultAuditConfig } from '../../../ml/config.js';
import type { DefenseInput } from '../../../ml/defenses/index.js';
import { matrix } from '../../../ml/matrix.js';
import { Rng } from '../../../ml/random.js';

export const CLASSES = ['airplane', 'automobile', 'bird'];
export const PER_CLASS = 200;
export const D = 16;

export interface Synthetic {
  input: DefenseInput;
  /** Samples of class 0 moved to a separate cluster (10% of the class). */
  planted: number[];
  /** Samples drawn around class 1's centre but labelled 2: sample -> true class. */
  mislabelled: Map<number, number>;
}

/**
 * 3 classes x 200 samples in 16 dimensions: class y around 6 e_y (unit noise), in class order.
 * `plant`: class 0's samples 0..19 sit around 6 e_0 + 8 e_5 instead (the planted cluster).
 * `mislabel`: samples 400..404 are drawn around class 1's centre but labelled 2.
 */
export function synthetic({ plant = true, mislabel = true, seed = 7 } = {}): Synthetic {
  const rng = new Rng(seed);
  const n = CLASSES.length * PER_CLASS;
  const data = new Float32Array(n * D);
  const labels = new Int32Array(n);
  const planted = plant ? Array.from({ length: PER_CLASS / 10 }, (_, i) => i) : [];
  const mislabelled = new Map(mislabel ? Array.from({ length: 5 }, (_, i) => [2 * PER_CLASS + i, 1] as [number, number]) : []);
  for (let i = 0; i < n; i++) {
    const y = Math.floor(i / PER_CLASS);
    labels[i] = y;
    const centre = mislabelled.get(i) ?? y;
    for (let t = 0; t < D; t++) data[i * D + t] = rng.normal();
    data[i * D + centre] += 6;
    if (planted.includes(i)) data[i * D + 5] += 8;
  }
  return {
    input: {
      features: matrix(n, D, data),
      labels,
      classNames: CLASSES,
      ids: Array.from({ length: n }, (_, i) => `img${i}`),
      // The flow method's facts: baselines must not read them (see the independence tests).
      density: matrix(n, CLASSES.length),
      detections: [],
    },
    planted,
    mislabelled,
  };
}

export const defaults = defaultAuditConfig;

/** Indices whose entry satisfies `pick`. */
export function where<T>(entries: readonly T[], pick: (e: T) => boolean): number[] {
  return entries.flatMap((e, i) => (pick(e) ? [i] : []));
}
