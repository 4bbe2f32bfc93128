// Stage `attack`: poisons the ingested dataset (attacks/) and keeps the ground truth beside it,
// with a preview grid of poisoned samples and, for attacks built on a trained model (ISSBA's
// encoder), that model, so that the ASR test set is made with the same one.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { poisonDataset, writePreview } from '../../attacks/index.js';
import { writeDataset } from '../../data/ingest.js';
import type { StageImpl } from '../stage.js';
import { datasetInfo } from './common.js';

/** Folder of the attack's saved model inside the artifact (`createAttack(..., { modelDir })`). */
export const ATTACK_MODEL_DIR = 'attack-model';

export const attackStage: StageImpl<'attack'> = {
  async compute(run) {
    const clean = await run.dataset();
    const cfg = run.params.attack;
    // LC trains a surrogate classifier, ISSBA an encoder: they need a tensor backend.
    if (cfg.name === 'lc' || cfg.name === 'issba') await run.backend('auto', 'training');
    const signal = run.runtime.signal;
    const { poisoned, truth, attack } = await poisonDataset(clean, cfg, { ...(signal ? { signal } : {}), log: (line) => run.log(line) });
    try {
      const manifest = await writeDataset(poisoned, join(run.out, 'dataset'), `${clean.manifest.name}-${cfg.name}`);
      await writeFile(join(run.out, 'truth.json'), JSON.stringify(truth) + '\n');
      if (truth.poisoned.length > 0) await writePreview(join(run.out, 'preview.png'), clean, poisoned, truth, attack);
      await attack.save?.(join(run.out, ATTACK_MODEL_DIR));
      const figure = `${truth.poisoned.length} of ${manifest.size} poisoned (${cfg.name} -> ${clean.classes[cfg.targetClass]})`;
      return { info: datasetInfo(manifest, figure) };
    } finally {
      attack.dispose?.();
    }
  },
};
