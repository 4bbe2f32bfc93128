// Shared test data for ml/ tests.
import { knownVerdict } from '../../ml/detect.js';

/** A detection of class `index` with only its verdict set (the statistics do not matter to the split). */
export const detection = knownVerdict;
