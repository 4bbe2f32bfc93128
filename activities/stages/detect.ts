// Stage `detect`: the target classes, by the non-disruptive and disruptive tests (ml/detect.ts).
import { join } from 'node:path';
import { detectTargets } from '../../ml/detect.js';
import type { StageImpl } from '../stage.js';
import { readMatrix, writeJson } from '../io.js';

export const detectStage: StageImpl<'detect'> = {
  async compute(run) {
    const density = await readMatrix(await run.input('density'), 'density');
    const source = await run.dataset();
    const detections = detectTargets(density, source.labels, run.params.config);
    await writeJson(join(run.out, 'detections.json'), detections);
    const targets = detections.filter((d) => d.kind !== 'clean');
    const figure = targets.length
      ? `target${targets.length > 1 ? 's' : ''}: ${targets.map((d) => `${source.classes[d.index]} (${d.kind})`).join(', ')}`
      : 'no target class';
    return { info: { figure, targetClasses: targets.map((d) => d.index), classes: [...source.classes] } };
  },
};
