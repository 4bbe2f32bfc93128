// Stage `retrain`: a classifier trained from scratch on the cleansed labels (ml/train.ts).
import { join } from 'node:path';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { BackendInfo } from '../../backend/backend.js';
import type { ImageSource } from '../../data/types.js';
import { trainingLabels } from '../../ml/cleansed.js';
import { saveModel } from '../../ml/model-io.js';
import { trainClassifier } from '../../ml/train.js';
import type { RetrainParams } from '../../workflows/stage-params.js';
import type { StageImpl, StageRun } from '../stage.js';
import { readCleansed } from './common.js';

export const retrainStage: StageImpl<'retrain'> = {
  async compute(run) {
    const { model, backend, summary, resumedFromEpoch } = await trainStageClassifier(run, async () =>
      trainingLabels(await readCleansed(await run.input('relabel'))),
    );
    model.dispose();
    return { info: { figure: summary, backend: backend.name, device: backend.device }, resumedFromEpoch };
  },
};

/**
 * The classifier of a stage with retrain parameters (this one, `classifierFeatures`), trained on
 * `labels(source)` (-1: left out) and saved as `model` in the artifact. The caller disposes it.
 */
export async function trainStageClassifier(
  run: StageRun<RetrainParams>,
  labels: (source: ImageSource) => Promise<Int32Array>,
): Promise<{ model: tfl.LayersModel; source: ImageSource; backend: BackendInfo; summary: string; resumedFromEpoch: number }> {
  const p = run.params;
  const hooks = run.training(); // first: its heartbeats carry the checkpoint a retry reads
  const backend = await run.backend(p.backend, 'training');
  const source = await run.dataset();
  const { model, losses, resumedFromEpoch } = await trainClassifier(source, await labels(source), p.config, {
    seed: p.seed,
    stem: p.stem,
    inputSize: p.imageSize,
    hooks,
  });
  try {
    await saveModel(model, join(run.out, 'model'));
  } catch (err) {
    model.dispose();
    throw err;
  }
  return { model, source, backend, summary: `loss ${losses.at(-1)?.toFixed(4)} after ${losses.length} epochs`, resumedFromEpoch };
}
