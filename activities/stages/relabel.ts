// Stage `relabel`: the defense (ml/defenses/, the paper's by default) splits the training set
// into the cleansed manifest: keep, relabel or drop each sample, and which side it fell on.
// The images' pixel components are computed here, when the paper's defense asks for them
// (relabel.pixelComponents): only this stage reads them, and they cost one pass over the images.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { countActions } from '../../ml/cleansed.js';
import { relabelModelOf, type RelabelConfig } from '../../ml/config.js';
import { createDefense } from '../../ml/defenses/index.js';
import { pixelComponents } from '../../ml/pixel-components.js';
import type { StageImpl } from '../stage.js';
import { readMatrix } from '../io.js';
import { readDetections } from './common.js';

export const relabelStage: StageImpl<'relabel'> = {
  async compute(run) {
    const source = await run.dataset();
    const detections = await readDetections(await run.input('detect'));
    const relabel = run.params.defense === 'flow-relabel' ? (run.params.config as RelabelConfig) : undefined;
    // Only a non-disruptive target is relabelled, and only by the shared Gaussians (the flows
    // read no features): a clean audit, the nightly common case, does not pay for the pixels.
    const relabels = detections.some((d) => d.kind === 'non-disruptive');
    const k = relabel && relabels && relabelModelOf(relabel) === 'shared-gaussian' ? (relabel.pixelComponents ?? 0) : 0;
    const pixels = k
      ? await pixelComponents(source, k, {
          ...(run.runtime.signal ? { signal: run.runtime.signal } : {}),
          onBatch: (done, total) => run.runtime.heartbeat({ batch: done, batches: total }),
        })
      : undefined;
    if (pixels && pixels.cols < k)
      run.log(`relabel.pixelComponents: ${pixels.cols} of ${k} pixel components (the dataset's ${source.size} samples give no more)`);
    const cleansed = createDefense(run.params.defense).split(
      {
        ids: source.ids,
        labels: source.labels,
        classNames: source.classes,
        features: await readMatrix(await run.input('features'), 'features'),
        density: await readMatrix(await run.input('density'), 'density'),
        detections,
        ...(pixels ? { pixelComponents: pixels } : {}),
      },
      run.params.config,
    );
    await writeFile(join(run.out, 'cleansed.jsonl'), cleansed.map((e) => JSON.stringify(e)).join('\n') + '\n');
    const counts = countActions(cleansed);
    return { info: { figure: `kept ${counts.kept}, relabelled ${counts.relabelled}, dropped ${counts.dropped}`, counts } };
  },
};
