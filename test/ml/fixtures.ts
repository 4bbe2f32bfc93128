// Shared test data for ml/ tests.
import type { ClassDetection } from '../../ml/detect.js';

/** A detection of class `index` with only its verdict set (the statistics do not matter to the split). */
export const detection = (index: number, kind: ClassDetection['kind']): ClassDetection => ({
  index,
  count: 0,
  sND: 0,
  ownNLL: 0,
  sNDNormalized: 0,
  sD: 0,
  valley: -Infinity,
  ndFlag: kind === 'non-disruptive',
  dFlag: kind === 'disruptive',
  kind,
});
