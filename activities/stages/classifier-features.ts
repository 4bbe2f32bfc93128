// Stage `classifierFeatures`: the setting of the Spectral Signatures and Activation Clustering
// papers. A classifier is trained on the dataset as labelled (poisoned labels included, so a
// backdoor that implants becomes one of its features), with the `retrain` settings, and the
// penultimate layer of every sample is written as `features` for the baseline to read. Raw
// activations, as those papers use them (the encoder's features stage standardises; these do not).
import { encodeSamples } from '../../ml/features.js';
import { penultimateLayer } from '../../ml/resnet.js';
import type { StageImpl } from '../stage.js';
import { writeMatrix } from '../io.js';
import { trainStageClassifier } from './retrain.js';

export const classifierFeaturesStage: StageImpl<'classifierFeatures'> = {
  async compute(run) {
    const { model, source, backend, summary, resumedFromEpoch } = await trainStageClassifier(run, async (s) => s.labels);
    try {
      const features = await encodeSamples(penultimateLayer(model), source, {
        batchSize: run.params.batchSize,
        ...(run.runtime.signal ? { signal: run.runtime.signal } : {}),
        onBatch: (done, total) => run.runtime.heartbeat({ batch: done, batches: total }),
      });
      await writeMatrix(run.out, 'features', features);
      return {
        info: {
          figure: `${features.rows} x ${features.cols} penultimate features; ${summary}`,
          backend: backend.name,
          device: backend.device,
        },
        resumedFromEpoch,
      };
    } finally {
      model.dispose();
    }
  },
};
