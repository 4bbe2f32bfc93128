// Spectral signatures (Tran, Li and Madry, "Spectral Signatures in Backdoor Attacks", NeurIPS
// 2018, Algorithm 1), a baseline. For each class y: centre its features, take the top right-
// singular vector v of the centred matrix, score each sample by its squared projection
// tau_i = ((z_i - mean_y) . v)^2, and remove the 1.5 * eps highest-scoring samples, eps being the
// assumed poison rate (`removeFraction` = 1.5 * eps). A poisoned subpopulation shifts the class
// along one direction, which becomes the top singular direction, so its samples score highest.
//
// The rule is applied to EVERY class: the paper does not decide which class is a target, so a
// clean class loses the same share as the target. Removed samples are on the poisoned side
// (action drop, side 'poisoned'); the rest are kept as clean. Features and labels only: the
// flow method's detections are not read (an independent baseline).
import type { SpectralSignaturesConfig } from '../config.js';
import type { CleansedEntry } from '../audit-report.js';
import type { Matrix } from '../matrix.js';
import { classMembers, className, percent, requireConfig } from './common.js';
import { principalComponents } from './pca.js';
import type { Defense } from './types.js';

const WHO = 'spectral-signatures';

/** tau_i for every sample: squared projection on its class's top singular direction, length N. */
export function spectralScores(features: Matrix, labels: Int32Array, classes: number): Float64Array {
  const scores = new Float64Array(labels.length);
  for (const rows of classMembers(WHO, labels, classes)) {
    if (rows.length === 0) continue;
    const { scores: projection } = principalComponents(features, rows, 1);
    rows.forEach((i, m) => (scores[i] = projection[m] * projection[m]));
  }
  return scores;
}

export const spectralSignatures: Defense<SpectralSignaturesConfig> = {
  name: WHO,
  description:
    'baseline (Tran et al. 2018): per class, remove the removeFraction (1.5 x assumed poison rate) with the largest squared projection on the top singular direction of the centred features; applied to every class',
  configOf: (audit) => audit.spectralSignatures,
  split(input, config) {
    const f = config.removeFraction;
    requireConfig(f > 0 && f < 1, WHO, 'removeFraction', 'in (0, 1)', f);
    const { features, labels, ids, classNames } = input;
    const scores = spectralScores(features, labels, classNames.length);
    const share = percent(f);
    const out = new Array<CleansedEntry>(labels.length);
    for (const rows of classMembers(WHO, labels, classNames.length)) {
      // Highest score first, ties by input order, so the cut is deterministic.
      const ranked = [...rows].sort((a, b) => scores[b] - scores[a] || a - b);
      const removed = Math.round(f * rows.length);
      ranked.forEach((i, rank) => {
        const y = labels[i];
        const base = { id: ids[i], label: y, score: scores[i] };
        out[i] =
          rank < removed
            ? {
                ...base,
                action: 'drop',
                side: 'poisoned',
                reason: `spectral signatures: top ${share} outlier score of ${className(classNames, y)} -> removed (the same share is removed from every class; no target is detected)`,
              }
            : {
                ...base,
                action: 'keep',
                side: 'clean',
                reason: `spectral signatures: outside the top ${share} of ${className(classNames, y)}: kept`,
              };
      });
    }
    return out;
  },
};
