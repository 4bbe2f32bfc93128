// Stage `retrain`: a classifier trained from scratch on the cleansed labels (ml/train.ts).
import { join } from 'node:path';
import { trainingLabels } from '../../ml/cleansed.js';
import { saveModel } from '../../ml/model-io.js';
import { trainClassifier } from '../../ml/train.js';
import type { StageImpl } from '../engine.js';
import { readCleansed } from './common.js';

export const retrainStage: StageImpl<'retrain'> = {
  async compute(run) {
    const p = run.params;
    const hooks = run.training(); // first: its heartbeats carry the checkpoint a retry reads
    const backend = await run.backend(p.backend, 'training');
    const source = await run.dataset();
    const cleansed = await readCleansed(await run.input('relabel'));
    const { model, losses, resumedFromEpoch } = await trainClassifier(source, trainingLabels(cleansed), p.config, {
      seed: p.seed,
      stem: p.stem,
      inputSize: p.imageSize,
      hooks,
    });
    try {
      await saveModel(model, join(run.out, 'model'));
    } finally {
      model.dispose();
    }
    return {
      info: { figure: `loss ${losses.at(-1)?.toFixed(4)} after ${losses.length} epochs`, backend: backend.name, device: backend.device },
      resumedFromEpoch,
    };
  },
};
