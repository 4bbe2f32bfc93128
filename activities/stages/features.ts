// Stage `features`: the encoder's features of every training sample (ml/features.ts).
import { extractFeatures } from '../../ml/features.js';
import type { StageImpl } from '../engine.js';
import { writeMatrix } from '../io.js';
import { loadEncoder } from './encoder.js';

export const featuresStage: StageImpl<'features'> = {
  async compute(run) {
    const backend = await run.backend(run.params.backend, 'inference');
    const source = await run.dataset();
    const encoder = await loadEncoder(await run.input('encoder'), source.height);
    try {
      const features = await extractFeatures(encoder, source, {
        batchSize: run.params.batchSize,
        ...(run.runtime.signal ? { signal: run.runtime.signal } : {}),
        onBatch: (done, total) => run.runtime.heartbeat({ batch: done, batches: total }),
      });
      await writeMatrix(run.out, 'features', features);
      return { info: { figure: `${features.rows} x ${features.cols} features`, backend: backend.name } };
    } finally {
      encoder.dispose();
    }
  },
};
