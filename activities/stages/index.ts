// Every stage's implementation, by name: the engine's registry (one line per stage). Each module
// loads when its stage first needs it (activities/engine.ts LazyStage): a run whose stages are
// all cached loads none of the training code and no TensorFlow. `hooks` lists the optional hooks
// a stage has (identity: the cache key needs it; deliver: writes outside the store); the engine
// checks the list when the module loads, and test/activities/lazy-stages.test.ts checks them all.
import type { StageRegistry } from '../stage.js';

export const STAGE_IMPLS: StageRegistry = {
  ingest: { load: async () => (await import('./ingest.js')).ingestStage, hooks: ['identity'] },
  attack: { load: async () => (await import('./attack.js')).attackStage, hooks: [] },
  lineage: { load: async () => (await import('./lineage.js')).lineageStage, hooks: ['identity'] },
  encoder: { load: async () => (await import('./encoder.js')).encoderStage, hooks: ['identity'] },
  features: { load: async () => (await import('./features.js')).featuresStage, hooks: [] },
  flow: { load: async () => (await import('./flow.js')).flowStage, hooks: [] },
  density: { load: async () => (await import('./density.js')).densityStage, hooks: [] },
  detect: { load: async () => (await import('./detect.js')).detectStage, hooks: [] },
  classifierFeatures: { load: async () => (await import('./classifier-features.js')).classifierFeaturesStage, hooks: [] },
  relabel: { load: async () => (await import('./relabel.js')).relabelStage, hooks: [] },
  retrain: { load: async () => (await import('./retrain.js')).retrainStage, hooks: [] },
  evaluate: { load: async () => (await import('./evaluate.js')).evaluateStage, hooks: [] },
  report: { load: async () => (await import('./report.js')).reportStage, hooks: ['deliver'] },
};
