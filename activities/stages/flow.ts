// Stage `flow` (one instance per class): the class's normalizing flow on its own features
// (ml/flow.ts), trained through the one training loop, so it checkpoints and resumes exactly.
import { join } from 'node:path';
import { classMembers, saveFlow, trainClassFlow } from '../../ml/flow.js';
import { selectRows } from '../../ml/matrix.js';
import { StageInputError, type StageImpl } from '../engine.js';
import { readMatrix } from '../io.js';

export const flowStage: StageImpl<'flow'> = {
  async compute(run) {
    const p = run.params;
    await run.backend(p.backend, 'training');
    const features = await readMatrix(await run.input('features'), 'features');
    const rows = classMembers((await run.dataset()).labels, p.classIndex);
    if (rows.length === 0) throw new StageInputError(`class ${p.classIndex} has no samples: a flow cannot be fitted`);
    const { flow, nll, resumedFromEpoch } = await trainClassFlow(selectRows(features, rows), p.config, p.seed, run.training());
    try {
      await saveFlow(flow, join(run.out, 'flow.json'));
    } finally {
      flow.dispose();
    }
    return { info: { figure: `${rows.length} samples, NLL ${nll.at(-1)?.toFixed(3)}` }, resumedFromEpoch };
  },
};
