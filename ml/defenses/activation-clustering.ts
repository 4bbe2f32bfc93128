// Activation clustering (Chen et al., "Detecting Backdoor Attacks on Deep Neural Networks by
// Activation Clustering", 2018), a baseline. For each class: reduce its features to `dims`
// dimensions, split them with 2-means, and call the class poisoned when the smaller cluster is
// small (relative size <= sizeThreshold, the paper's 0.35) and the split is real (mean silhouette
// >= silhouetteThreshold, ART's 0.1): triggered samples form their own cluster in a target class,
// while a clean class splits into two halves of a unimodal cloud.
//
// Departures from the paper: the reduction is PCA (the default of the implementation in IBM's
// ART, by the paper's group), not ICA; the features are the audit's encoder's by default (the
// paper's, the poisoned classifier's last hidden layer, with `features: classifier`); and of the
// paper's three cluster analyses, relative size and silhouette are used, not exclusionary
// reclassification (it needs retraining per class).
//
// Unlike spectral signatures this detects target classes: in a flagged class the smaller cluster
// is removed (drop, side 'poisoned') and the larger kept as clean; every other class is kept.
// Features and labels only: the flow method's detections are not read.
import type { ActivationClusteringConfig } from '../config.js';
import type { CleansedEntry } from '../audit-report.js';
import type { Matrix } from '../matrix.js';
import { Rng } from '../random.js';
import { classMembers, className, percent, requireConfig } from './common.js';
import { kMeans, meanSilhouette } from './kmeans.js';
import { principalComponents } from './pca.js';
import type { Defense } from './types.js';

const WHO = 'activation-clustering';
/** k-means++ starts per class; the lowest-inertia run is kept (scikit-learn's n_init of 10). */
const RESTARTS = 10;
/**
 * Points whose silhouette is averaged, at most, per class (each against all of the class):
 * scikit-learn's `sample_size` idea, so that a class of 25,000 costs O(2,000 m) and not O(m^2).
 * The mean of 2,000 is within about 0.01 of the full mean.
 */
const SILHOUETTE_SAMPLE = 2000;
/** Seed of each class's k-means stream (salted by class): fixed, so the split depends only on
 *  features and labels; the restarts make it insensitive to the seed. */
const SEED = 0xac1d5eed;

/** What the cluster analysis found in one class. */
export interface ClassClustering {
  index: number;
  count: number;
  /** Share of the class in the smaller of the two clusters. */
  relativeSize: number;
  /** Mean silhouette of the 2-means split (sampled, see SILHOUETTE_SAMPLE). */
  silhouette: number;
  flagged: boolean;
  /** Per member of the class (in input order): whether it is in the smaller cluster. */
  smaller: boolean[];
  /** The class's sample indices, in input order. */
  rows: number[];
}

/** The paper's per-class analysis: PCA to `dims`, 2-means, relative size and silhouette. */
export function clusterClasses(
  features: Matrix,
  labels: Int32Array,
  classes: number,
  config: ActivationClusteringConfig,
): ClassClustering[] {
  return classMembers(WHO, labels, classes).map((rows, y) => {
    const m = rows.length;
    const none = { index: y, count: m, relativeSize: 0, silhouette: 0, flagged: false, smaller: rows.map(() => false), rows };
    if (m < 2) return none;
    const dims = Math.min(config.dims, features.cols);
    const { scores } = principalComponents(features, rows, dims);
    const rng = new Rng((SEED ^ Math.imul(y + 1, 0x9e3779b1)) >>> 0);
    const { assignment, sizes } = kMeans(scores, m, dims, 2, rng, RESTARTS);
    // The smaller cluster; on a tie (relative size 0.5, never flagged) cluster 1.
    const small = sizes[0] < sizes[1] ? 0 : 1;
    const relativeSize = sizes[small] / m;
    const sample = m <= SILHOUETTE_SAMPLE ? Int32Array.from(rows.keys()) : rng.permutation(m).slice(0, SILHOUETTE_SAMPLE).sort();
    const silhouette = meanSilhouette(scores, m, dims, assignment, 2, sample);
    const flagged = relativeSize <= config.sizeThreshold && silhouette >= config.silhouetteThreshold;
    return { ...none, relativeSize, silhouette, flagged, smaller: Array.from(assignment, (c) => c === small) };
  });
}

export const activationClustering: Defense<ActivationClusteringConfig> = {
  name: WHO,
  description:
    'baseline (Chen et al. 2018): per class, PCA to dims, 2-means; a class whose smaller cluster is at most sizeThreshold of it, with silhouette at least silhouetteThreshold, is a target and loses that cluster',
  configOf: (audit) => audit.activationClustering,
  split(input, config) {
    const { dims, sizeThreshold, silhouetteThreshold } = config;
    requireConfig(Number.isInteger(dims) && dims >= 1, WHO, 'dims', 'an integer >= 1', dims);
    requireConfig(sizeThreshold > 0 && sizeThreshold < 0.5, WHO, 'sizeThreshold', 'in (0, 0.5)', sizeThreshold);
    requireConfig(silhouetteThreshold >= -1 && silhouetteThreshold <= 1, WHO, 'silhouetteThreshold', 'in [-1, 1]', silhouetteThreshold);
    const { features, labels, ids, classNames } = input;
    const classes = clusterClasses(features, labels, classNames.length, config);
    const targets = classes.filter((c) => c.flagged).map((c) => className(classNames, c.index));
    const verdict = targets.length ? `targets found: ${targets.join(', ')}` : 'no target found';
    const out = new Array<CleansedEntry>(labels.length);
    for (const c of classes) {
      const name = className(classNames, c.index);
      const facts = `smaller cluster ${percent(c.relativeSize)}, silhouette ${c.silhouette.toFixed(3)}`;
      c.rows.forEach((i, m) => {
        const base = { id: ids[i], label: c.index };
        if (!c.flagged) {
          out[i] = {
            ...base,
            action: 'keep',
            side: 'clean',
            reason: `activation clustering: ${name} not flagged (${facts}; ${verdict}): kept`,
          };
        } else if (c.smaller[m]) {
          out[i] = {
            ...base,
            action: 'drop',
            side: 'poisoned',
            reason: `activation clustering: target ${name} (${facts}; ${verdict}): in the smaller cluster -> removed`,
          };
        } else {
          out[i] = {
            ...base,
            action: 'keep',
            side: 'clean',
            reason: `activation clustering: target ${name} (${facts}; ${verdict}): in the larger cluster -> kept as clean`,
          };
        }
      });
    }
    return out;
  },
};
