// Stage `attack`: poisons the ingested dataset (attacks/) and keeps the ground truth beside it.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { poisonDataset } from '../../attacks/index.js';
import { writeDataset } from '../../data/ingest.js';
import type { StageImpl } from '../engine.js';
import { datasetInfo } from './common.js';

export const attackStage: StageImpl<'attack'> = {
  async compute(run) {
    const clean = await run.dataset();
    const cfg = run.params.attack;
    const { poisoned, truth } = await poisonDataset(clean, cfg);
    const manifest = await writeDataset(poisoned, join(run.out, 'dataset'), `${clean.manifest.name}-${cfg.name}`);
    await writeFile(join(run.out, 'truth.json'), JSON.stringify(truth) + '\n');
    const figure = `${truth.poisoned.length} of ${manifest.size} poisoned (${cfg.name} -> ${clean.classes[cfg.targetClass]})`;
    return { info: datasetInfo(manifest, figure) };
  },
};
