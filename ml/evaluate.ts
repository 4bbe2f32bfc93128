// Evaluation of a defended run (method.md step 10): classifier metrics on predictions, and
// cleansing metrics of the manifest against the ground truth written by `attacks/`.
import type { PoisonTruth } from '../data/types.js';
import type { CleansedEntry, Evaluation } from './audit-report.js';

/** Fraction of predictions equal to their label (ACC on the clean test set). */
export function accuracy(pred: Int32Array, labels: Int32Array): number {
  if (pred.length !== labels.length) throw new Error(`accuracy: ${pred.length} predictions for ${labels.length} labels`);
  if (pred.length === 0) throw new Error('accuracy: empty test set');
  let hit = 0;
  for (let i = 0; i < pred.length; i++) if (pred[i] === labels[i]) hit++;
  return hit / pred.length;
}

/**
 * ASR: fraction of triggered test images classified as y_T. The caller passes predictions on
 * the triggered non-target images only (attacks' `triggeredTestSet`), so images that truly
 * belong to y_T never inflate it.
 */
export function attackSuccessRate(predOnTriggered: Int32Array, targetClass: number): number {
  if (predOnTriggered.length === 0) throw new Error('attackSuccessRate: empty triggered test set');
  let hit = 0;
  for (let i = 0; i < predOnTriggered.length; i++) if (predOnTriggered[i] === targetClass) hit++;
  return hit / predOnTriggered.length;
}

/**
 * "Sent to D^_P": the entry is on the poisoned side of the defense's split (`side`), whether the
 * defense relabelled or removed it. Read from `side`, not from `action` or `reason`, because a
 * drop can be either the poisoned side or the undecided part, and reasons are free text.
 * Throws on an entry without a valid side (e.g. a manifest written before `side` existed):
 * counting it as not sent would silently give a TPR of 0.
 */
export function sentToPoisoned(entry: CleansedEntry): boolean {
  const side: unknown = entry.side;
  if (side !== 'poisoned' && side !== 'clean' && side !== 'uncertain') {
    throw new Error(
      `cleansingMetrics: entry ${entry.id} has side ${JSON.stringify(side)}, expected "poisoned", "clean" or "uncertain" (a manifest from before \`side\` existed? rerun the relabel stage)`,
    );
  }
  return side === 'poisoned';
}

/**
 * Cleansing quality against ground truth. `cleansed` is in dataset order (entry i = sample i
 * of the audited, poisoned set, whose indices the truth uses).
 * - targetDetected: the flagged classes are exactly {y_T}.
 * - tpr: among truly poisoned samples, the fraction sent to D^_P (side 'poisoned', see
 *   `sentToPoisoned`); a poisoned sample the defense keeps or cannot decide on counts as missed.
 * - fpr: among samples that are not poisoned and whose (dataset) label is a flagged class, the
 *   fraction sent to D^_P. Covers count as clean: their label is true.
 * - relabelAccuracy: among poisoned samples with action 'relabel', the fraction whose new label
 *   is the label before poisoning (paper Table 2).
 * A rate whose denominator is empty is left undefined rather than reported as 0 or NaN.
 */
export function cleansingMetrics(
  cleansed: CleansedEntry[],
  truth: PoisonTruth,
  flaggedClasses: number[],
): Pick<Evaluation, 'tpr' | 'fpr' | 'relabelAccuracy' | 'targetDetected'> {
  if (truth.sourceLabels.length !== truth.poisoned.length) {
    throw new Error(`cleansingMetrics: truth has ${truth.poisoned.length} poisoned indices but ${truth.sourceLabels.length} source labels`);
  }
  const isPoisoned = new Uint8Array(cleansed.length);
  let sentPoisoned = 0;
  let relabelled = 0;
  let relabelledRight = 0;
  truth.poisoned.forEach((i, k) => {
    const entry = cleansed[i];
    if (!entry) throw new Error(`cleansingMetrics: poisoned index ${i} outside the manifest of ${cleansed.length} entries`);
    // A poisoned sample carries y_T; anything else means manifest and truth are not aligned.
    if (entry.label !== truth.targetClass) {
      throw new Error(
        `cleansingMetrics: entry ${i} (${entry.id}) has label ${entry.label}, but the truth says it was poisoned to ${truth.targetClass}: manifest and truth are not in the same order`,
      );
    }
    isPoisoned[i] = 1;
    if (sentToPoisoned(entry)) sentPoisoned++;
    if (entry.action === 'relabel') {
      relabelled++;
      if (entry.newLabel === truth.sourceLabels[k]) relabelledRight++;
    }
  });
  const flagged = new Set(flaggedClasses);
  let cleanFlagged = 0;
  let sentClean = 0;
  cleansed.forEach((entry, i) => {
    if (isPoisoned[i] || !flagged.has(entry.label)) return;
    cleanFlagged++;
    if (sentToPoisoned(entry)) sentClean++;
  });
  const rate = (num: number, den: number) => (den > 0 ? num / den : undefined);
  return {
    tpr: rate(sentPoisoned, truth.poisoned.length),
    fpr: rate(sentClean, cleanFlagged),
    relabelAccuracy: rate(relabelledRight, relabelled),
    targetDetected: flagged.size === 1 && flagged.has(truth.targetClass),
  };
}
