// Stage `flow` (one instance per class): the class's normalizing flow on its own features
// (ml/flow.ts), trained through the one training loop, so it checkpoints and resumes exactly.
// A group of instances computes together (computeGroup, ml/flow-group.ts): the group's flows
// trained in lockstep as one batched model, each still saved as its own artifact.
import { join } from 'node:path';
import type { FlowConfig } from '../../ml/config.js';
import { classMembers, saveFlow, trainClassFlow } from '../../ml/flow.js';
import { trainFlowGroup } from '../../ml/flow-group.js';
import { selectRows } from '../../ml/matrix.js';
import { canonicalJson } from '../../data/hash.js';
import { StageInputError, type StageImpl } from '../stage.js';
import { readMatrix } from '../io.js';

/**
 * The fewest samples a class's flow is fitted on without a warning, whatever the batch size.
 * The flow standardises with the class's own per-dimension mean and std (part of its density):
 * from n samples each std is off by about 1/sqrt(2(n-1)) (16% at 20 samples, 24% at 10), and
 * the defense's 15% ends of a class (relabel alpha) hold fewer than 3 samples below 20. The
 * class's density, S_ND and poison scores are then mostly noise.
 */
export const MIN_FLOW_SAMPLES = 20;

/**
 * The warning for a class of `count` samples whose features have `featureDim` columns, or
 * undefined when the flow can fit it sensibly: at least max(batch size, MIN_FLOW_SAMPLES)
 * samples, and at least as many samples as dimensions.
 * - Fewer than one batch means one optimizer step per epoch, so the flow stays close to its
 *   initial Gaussian after `epochs` steps.
 * - Fewer samples than dimensions: the class's features span a subspace of lower rank than the
 *   flow's space, so the flow learns that subspace rather than a density; its own samples look
 *   far likelier than unseen ones of the same class, which is what S_ND and the poison score
 *   compare (the demo at 50 images per class: 112 pooled dimensions from about 45 samples).
 */
export function smallClassWarning(
  className: string,
  classIndex: number,
  count: number,
  config: FlowConfig,
  featureDim: number,
): string | undefined {
  const needed = Math.max(config.batchSize, MIN_FLOW_SAMPLES);
  if (count < needed) {
    const why =
      count < config.batchSize
        ? `fewer than one batch (audit.flow.batchSize ${config.batchSize}): one optimizer step per epoch`
        : `fewer than ${MIN_FLOW_SAMPLES}: its own mean and spread are estimated too roughly`;
    return (
      `class ${JSON.stringify(className)} (${classIndex}) has ${count} samples, ${why}; ` +
      `its flow, its S_ND and its samples' poison scores are unreliable (add samples, or merge or drop the class)`
    );
  }
  if (count < featureDim)
    return (
      `class ${JSON.stringify(className)} (${classIndex}) has ${count} samples, fewer than its ${featureDim} feature dimensions: ` +
      `its flow can fit their span rather than a density, so its S_ND and poison scores are unreliable ` +
      `(add samples, or fewer dimensions: audit.features.stages, audit.encoder.width)`
    );
  return undefined;
}

export const flowStage: StageImpl<'flow'> = {
  async compute(run) {
    const p = run.params;
    const hooks = run.training(); // first: its heartbeats carry the checkpoint a retry reads
    const { device } = await run.backend(p.backend, 'training');
    const features = await readMatrix(await run.input('features'), 'features');
    const dataset = await run.dataset();
    const rows = classMembers(dataset.labels, p.classIndex);
    if (rows.length === 0) throw new StageInputError(`class ${p.classIndex} has no samples: a flow cannot be fitted`);
    const warning = smallClassWarning(
      dataset.classes[p.classIndex] ?? String(p.classIndex),
      p.classIndex,
      rows.length,
      p.config,
      features.cols,
    );
    if (warning) run.log(`warning: ${warning}`);
    const { flow, nll, resumedFromEpoch } = await trainClassFlow(selectRows(features, rows), p.config, p.seed, hooks);
    try {
      await saveFlow(flow, join(run.out, 'flow.json'));
    } finally {
      flow.dispose();
    }
    return {
      info: { figure: `${rows.length} samples, NLL ${nll.at(-1)?.toFixed(3)}`, device, ...(warning ? { warnings: [warning] } : {}) },
      resumedFromEpoch,
    };
  },

  async computeGroup(runs, group) {
    const p = group.params;
    const how = (q: typeof p) => canonicalJson({ config: q.config, backend: q.backend });
    const odd = runs.find((r) => how(r.params) !== how(p));
    if (odd) throw new StageInputError(`${group.label}: ${odd.label} has another flow config or backend than the group`);
    const hooks = group.training(); // first: its heartbeats carry the checkpoint a retry reads
    const { device } = await group.backend(p.backend, 'training');
    // Read and verified once for the group: the members share their inputs.
    const features = await readMatrix(await group.input('features'), 'features');
    const dataset = await group.dataset();
    const members = runs.map((run) => {
      const y = run.params.classIndex;
      const rows = classMembers(dataset.labels, y);
      if (rows.length === 0) throw new StageInputError(`class ${y} has no samples: a flow cannot be fitted`);
      const warning = smallClassWarning(dataset.classes[y] ?? String(y), y, rows.length, run.params.config, features.cols);
      if (warning) run.log(`warning: ${warning}`);
      return { features: selectRows(features, rows), seed: run.params.seed, warning };
    });
    const { flows, nll, resumedFromEpoch } = await trainFlowGroup(members, p.config, hooks);
    try {
      for (const [i, run] of runs.entries()) await saveFlow(flows[i], join(run.out, 'flow.json'));
    } finally {
      flows.forEach((f) => f.dispose());
    }
    return members.map((m, i) => ({
      info: {
        figure: `${m.features.rows} samples, NLL ${nll[i].at(-1)?.toFixed(3)} (trained in a group of ${runs.length})`,
        device,
        ...(m.warning ? { warnings: [m.warning] } : {}),
      },
      resumedFromEpoch,
    }));
  },
};
