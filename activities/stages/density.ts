// Stage `density`: every sample's log-density under every class's flow (ml/density.ts).
import { join } from 'node:path';
import { densityMatrix } from '../../ml/density.js';
import { loadFlow, type ClassFlow } from '../../ml/flow.js';
import type { StageImpl } from '../stage.js';
import { readMatrix, writeMatrix } from '../io.js';

export const densityStage: StageImpl<'density'> = {
  async compute(run) {
    const { device } = await run.backend(run.params.backend, 'inference');
    const features = await readMatrix(await run.input('features'), 'features');
    const flows: ClassFlow[] = [];
    try {
      for (let y = 0; y < run.params.classes; y++) flows.push(await loadFlow(join(await run.input(`flow-${y}`), 'flow.json')));
      const density = densityMatrix(flows, features);
      await writeMatrix(run.out, 'density', density);
      return { info: { figure: `${density.rows} x ${density.cols} log-densities`, device } };
    } finally {
      flows.forEach((f) => f.dispose());
    }
  },
};
