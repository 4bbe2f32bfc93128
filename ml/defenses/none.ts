// No defense: every sample kept with its label. The benchmark's "no defense" row: retraining on
// this split trains on the poisoned set as given, which measures the attack's own strength (ASR).
import type { Defense } from './types.js';

export const noDefense: Defense<null> = {
  name: 'none',
  description: 'no defense: keeps every sample with its label (the undefended baseline of benchmarks)',
  configOf: () => null,
  split(input) {
    return input.ids.map((id, i) => ({
      id,
      label: input.labels[i],
      action: 'keep' as const,
      side: 'clean' as const,
      reason: 'no defense: kept',
    }));
  },
};
