// Stage `report`: report.json + cleansed.jsonl as an artifact, then copied into the pipeline's
// output folder. Always computed (its parameters carry this run's timings).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildReport, writeAuditOutputs } from '../../ml/cleansed.js';
import type { AuditReport, Evaluation } from '../../ml/config.js';
import type { AuditSummary } from '../../workflows/types.js';
import type { StageImpl } from '../engine.js';
import { readJson } from '../io.js';
import { readCleansed, readDetections } from './common.js';

export const reportStage: StageImpl<'report'> = {
  async compute(run) {
    const p = run.params;
    const source = await run.dataset();
    const cleansed = await readCleansed(await run.input('relabel'));
    const evaluation = run.has('evaluate') ? await readJson<Evaluation>(join(await run.input('evaluate'), 'evaluation.json')) : undefined;
    const report = buildReport({
      dataset: { name: source.manifest.name, hash: source.manifest.hash, samples: source.size, classes: source.classes },
      backend: ((await run.inputInfo('features')).backend ?? 'cpu') as AuditReport['backend'],
      config: p.config,
      detections: await readDetections(await run.input('detect')),
      cleansed,
      timings: p.timings,
      warnings: p.warnings,
      ...(evaluation ? { evaluation } : {}),
    });
    await writeAuditOutputs(run.out, report, cleansed);
    const summary: AuditSummary = {
      datasetName: report.dataset.name,
      samples: report.dataset.samples,
      targetClasses: report.targetClasses.map((y) => report.dataset.classes[y] ?? String(y)),
      counts: report.counts,
      ...(report.evaluation ? { evaluation: report.evaluation } : {}),
      warnings: report.warnings?.length ?? 0,
    };
    const { kept, relabelled, dropped } = report.counts;
    return {
      info: {
        figure: `${report.targetClasses.length} target class(es); kept ${kept}, relabelled ${relabelled}, dropped ${dropped}`,
        summary,
      },
    };
  },
  async deliver(dir, p, log) {
    const report = JSON.parse(await readFile(join(dir, 'report.json'), 'utf8')) as AuditReport;
    await writeAuditOutputs(p.output, report, await readCleansed(dir));
    const outputs = [join(p.output, 'report.json'), join(p.output, 'cleansed.jsonl')];
    log(`wrote ${outputs.join(', ')}`);
    return { outputs };
  },
};
