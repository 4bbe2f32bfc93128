// Stage `classifierFeatures`: the setting of the Spectral Signatures and Activation Clustering
// papers. A classifier is trained on the dataset as labelled (poisoned labels included, so a
// backdoor that implants becomes one of its features), with the `retrain` settings, and the
// penultimate layer of every sample is written as `features` for the baseline to read. Raw
// activations, as those papers use them (the encoder's features stage standardises; these do not).
import { join } from 'node:path';
import { encodeSamples } from '../../ml/features.js';
import { saveModel } from '../../ml/model-io.js';
import { penultimateLayer } from '../../ml/resnet.js';
import { trainClassifier } from '../../ml/train.js';
import type { StageImpl } from '../engine.js';
import { writeMatrix } from '../io.js';

export const classifierFeaturesStage: StageImpl<'classifierFeatures'> = {
  async compute(run) {
    const p = run.params;
    const hooks = run.training(); // first: its heartbeats carry the checkpoint a retry reads
    const backend = await run.backend(p.backend, 'training');
    const source = await run.dataset();
    const { model, losses, resumedFromEpoch } = await trainClassifier(source, source.labels, p.config, {
      seed: p.seed,
      stem: p.stem,
      inputSize: p.imageSize,
      hooks,
    });
    try {
      await saveModel(model, join(run.out, 'model'));
      const features = await encodeSamples(penultimateLayer(model), source, {
        batchSize: p.batchSize,
        ...(run.runtime.signal ? { signal: run.runtime.signal } : {}),
        onBatch: (done, total) => run.runtime.heartbeat({ batch: done, batches: total }),
      });
      await writeMatrix(run.out, 'features', features);
      return {
        info: {
          figure: `${features.rows} x ${features.cols} penultimate features; loss ${losses.at(-1)?.toFixed(4)} after ${losses.length} epochs`,
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
