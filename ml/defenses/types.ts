// One shape for every defense, so that the audit, the pipeline and the evaluation never need to
// know which defense produced the split (the attack registry's idea, attacks/types.ts, applied
// to the defense side): the paper's method and baselines run on the same features and density
// facts and are scored on the same `side` field.
import type { AuditConfig } from '../config.js';
import type { CleansedEntry } from '../audit-report.js';
import type { ClassDetection } from '../detect.js';
import type { Matrix } from '../matrix.js';

/** What the audit has computed by the time a defense runs (method.md steps 1-6). */
export interface DefenseInput {
  /** Features, N x D, that feature-space baselines (activation clustering, spectral signatures)
   *  work on: the encoder's z_i (standardised, ml/features.ts), or with their `features:
   *  classifier` a poisoned-data classifier's penultimate layer (stage classifierFeatures). */
  features: Matrix;
  /** The dataset's labels y_i (the attacker's, for poisoned samples), length N. */
  labels: Int32Array;
  /** Class names, length C; used in the entries' reasons. */
  classNames: readonly string[];
  /** Sample ids, length N; copied into the entries. */
  ids: readonly string[];
  /** log p_y(z_i) of every class flow y for every sample, N x C (ml/density.ts). */
  density: Matrix;
  /** Per-class target detection (ml/detect.ts), one per class. */
  detections: readonly ClassDetection[];
  /**
   * The images' leading pixel principal components, N x k (ml/pixel-components.ts): present
   * when the defense's config asks for them (`pixelComponents` of 'flow-relabel').
   */
  pixelComponents?: Matrix;
}

/**
 * A defense: from the audit's facts to the split of the training set. `C` is the defense's
 * own config, which lives in a section of AuditConfig that the defense names in `configOf`.
 */
export interface Defense<C> {
  /** The registry key (ml/defenses/index.ts). */
  readonly name: string;
  /** One line for listings: what the defense does. */
  readonly description: string;
  /** This defense's own config, read from the audit config. */
  configOf(audit: AuditConfig): C;
  /**
   * The split: one CleansedEntry per sample, in input order, each with a `side` allowed for
   * its action (SampleSide). Synchronous and deterministic: same input and config, same output.
   * (Declared as a method, so a registry can hold defenses of different config types.)
   */
  split(input: DefenseInput, config: C): CleansedEntry[];
}
