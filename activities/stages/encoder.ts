// Stage `encoder`: SimCLR on the training set (ml/simclr.ts), checkpointed every epoch; or a
// pointer to a pretrained model, whose folder fingerprint is part of the key.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LayersModel } from '@tensorflow/tfjs-layers';
import { folderFingerprint } from '../../data/fingerprint.js';
import { loadPretrainedEncoder } from '../../ml/encoder.js';
import { loadModel, saveModel } from '../../ml/model-io.js';
import { trainSimclr } from '../../ml/simclr.js';
import type { StageImpl } from '../engine.js';

const POINTER = 'pretrained.json';

export const encoderStage: StageImpl<'encoder'> = {
  async identity(params) {
    return { params, ...(params.kind === 'pretrained' ? { external: await folderFingerprint(params.path) } : {}) };
  },
  async compute(run) {
    const p = run.params;
    if (p.kind === 'pretrained') {
      // The model stays where it is (its fingerprint is in the key); the artifact points at it.
      await writeFile(join(run.out, POINTER), JSON.stringify({ path: p.path }) + '\n');
      return { info: { figure: `pretrained ${p.path}` } };
    }
    const hooks = run.training(); // first: its heartbeats carry the checkpoint a retry reads
    const backend = await run.backend(p.backend, 'training');
    const { encoder, losses, resumedFromEpoch } = await trainSimclr(await run.dataset(), p.config, p.seed, hooks);
    try {
      await saveModel(encoder, join(run.out, 'model'));
    } finally {
      encoder.dispose();
    }
    return { info: { figure: `loss ${losses.at(-1)?.toFixed(4)} after ${losses.length} epochs`, backend: backend.name }, resumedFromEpoch };
  },
};

/** The encoder an `encoder` artifact holds (trained, or the pretrained model it points at). */
export async function loadEncoder(dir: string, imageSize: number): Promise<LayersModel> {
  const text = await readFile(join(dir, POINTER), 'utf8').catch(() => undefined);
  if (text !== undefined) return loadPretrainedEncoder((JSON.parse(text) as { path: string }).path, imageSize);
  return loadModel(join(dir, 'model'));
}
