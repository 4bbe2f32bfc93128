// The paper's method (method.md steps 7-8): poison score s = log p_y(z) minus a reference of
// the other classes' densities (ml/score.ts; the paper's maximum or, by default, the median), then, inside each flagged class, the alpha split and generative
// relabelling of ml/relabel.ts. The features are read only by the 'shared-gaussian' relabelling
// model, with the pixel components beside them when `pixelComponents` asks for them.
import { sharedGaussians } from '../class-gaussians.js';
import { relabelModelOf, type RelabelConfig } from '../config.js';
import { concatColumns } from '../matrix.js';
import { splitAndRelabel } from '../relabel.js';
import { poisonScores } from '../score.js';
import type { Defense, DefenseInput } from './types.js';

export const flowRelabel: Defense<RelabelConfig> = {
  name: 'flow-relabel',
  description:
    'paper method: per-class flow poison score; in flagged classes the poisoned alpha end is relabelled (non-disruptive) or removed (disruptive), the other alpha end kept, the middle dropped',
  configOf: (audit) => audit.relabel,
  split(input, config) {
    const { ids, labels, density, detections, classNames } = input;
    const scores = poisonScores(density, labels, config.scoreReference);
    // The flows' argmax is splitAndRelabel's own default.
    const foreign =
      relabelModelOf(config) === 'shared-gaussian'
        ? (clean: readonly number[]) => sharedGaussians(relabelFeatures(input, config), labels, clean, density.cols)
        : undefined;
    return splitAndRelabel(ids, labels, density, scores, detections, config, classNames, foreign);
  },
};

/**
 * What the shared Gaussians are fitted on: the features, and the pixel components when asked for
 * (at most `pixelComponents` of them: a small dataset gives fewer, ml/pixel-components.ts).
 */
function relabelFeatures({ features, pixelComponents }: DefenseInput, config: RelabelConfig) {
  const k = config.pixelComponents ?? 0;
  if (!k) return features;
  if (!pixelComponents || pixelComponents.rows !== features.rows || pixelComponents.cols < 1 || pixelComponents.cols > k)
    throw new Error(
      `flow-relabel: relabel.pixelComponents is ${k} but the input holds ${pixelComponents ? `${pixelComponents.rows} x ${pixelComponents.cols}` : 'no'} pixel components for ${features.rows} samples`,
    );
  return concatColumns(features, pixelComponents);
}
