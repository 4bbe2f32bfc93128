// Stage `evaluate`: what can be measured. With ground truth (an attack): TPR/FPR of the
// poisoned side and relabel accuracy; with a retrained model and a test set: ACC, and ASR on
// the triggered test images.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createAttack, triggeredTestSet } from '../../attacks/index.js';
import type { PoisonTruth } from '../../data/types.js';
import type { Evaluation } from '../../ml/audit-report.js';
import { accuracy, attackSuccessRate, cleansingMetrics } from '../../ml/evaluate.js';
import { loadModel } from '../../ml/model-io.js';
import { predict } from '../../ml/train.js';
import type { StageImpl } from '../stage.js';
import { writeJson } from '../io.js';
import { ATTACK_MODEL_DIR } from './attack.js';
import { readCleansed } from './common.js';

export const evaluateStage: StageImpl<'evaluate'> = {
  async compute(run) {
    const p = run.params;
    const signal = run.runtime.signal;
    const cleansed = await readCleansed(await run.input('relabel'));
    // The classes the defense acted on (any sample on its poisoned side), not the flow method's
    // detections: a baseline defense is scored on what it did (for the paper's method they agree).
    const flagged = [...new Set(cleansed.filter((e) => e.side === 'poisoned').map((e) => e.label))].sort((a, b) => a - b);
    let evaluation: Evaluation = {};
    let device: string | undefined;
    if (run.has('attack')) {
      const truth = JSON.parse(await readFile(join(await run.input('attack'), 'truth.json'), 'utf8')) as PoisonTruth;
      evaluation = { ...cleansingMetrics(cleansed, truth, flagged) };
    }
    if (run.has('model') && run.has('test')) {
      device = (await run.backend(p.backend, 'inference')).device;
      const test = await run.dataset('test');
      const model = await loadModel(join(await run.input('model'), 'model'));
      try {
        evaluation.acc = accuracy(await predict(model, test, signal ? { signal } : {}), test.labels);
        if (p.attack) {
          // Sample-specific attacks (ISSBA) trigger the test images with the model the attack stage saved.
          const modelDir = run.has('attack') ? join(await run.input('attack'), ATTACK_MODEL_DIR) : undefined;
          const attack = await createAttack(p.attack, test.height, modelDir ? { modelDir } : {});
          const triggered = await triggeredTestSet(test, attack, p.attack.targetClass, p.attack.seed);
          evaluation.asr = attackSuccessRate(await predict(model, triggered, signal ? { signal } : {}), p.attack.targetClass);
        }
      } finally {
        model.dispose();
      }
    }
    await writeJson(join(run.out, 'evaluation.json'), evaluation);
    const parts = Object.entries(evaluation)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k} ${typeof v === 'number' ? v.toFixed(3) : String(v)}`);
    const metrics: Record<string, number> = {};
    for (const [k, v] of Object.entries(evaluation)) if (typeof v === 'number') metrics[k] = v;
    return { info: { figure: parts.join(', ') || 'nothing to evaluate', metrics, ...(device ? { device } : {}) } };
  },
};
