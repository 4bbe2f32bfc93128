// Stage `report`: report.json, report.html and cleansed.jsonl as an artifact, then copied into
// the pipeline's output folder. Always computed (its parameters carry this run's timings).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathExists, withFsDeadline } from '../../data/files.js';
import type { PoisonTruth } from '../../data/types.js';
import { buildReport, writeAuditOutputs } from '../../ml/cleansed.js';
import type { AuditReport, Evaluation } from '../../ml/audit-report.js';
import { diffAudits, readAuditOutputs, sinceLastAudit, type AuditOutputs } from '../../report/diff.js';
import { buildReportPage } from '../../report/page.js';
import type { AuditSummary } from '../../workflows/types.js';
import type { StageImpl } from '../stage.js';
import { readJson, readMatrix } from '../io.js';
import { readCleansed, readDetections } from './common.js';

/**
 * The outputs the previous audit left in the output folder (the same pipeline's last run, for a
 * nightly schedule), or undefined. Unreadable ones are logged and skipped: they never fail an audit.
 */
async function previousAudit(output: string, log: (line: string) => void): Promise<AuditOutputs | undefined> {
  try {
    // Under the output folder's deadline, like the writes: an unreachable file system skips the diff instead of hanging the stage.
    if (!(await withFsDeadline('stat', output, () => pathExists(join(output, 'report.json'))))) return undefined;
    return await withFsDeadline('read', output, () => readAuditOutputs(output));
  } catch (err) {
    log(`no diff against the previous audit: ${(err as Error).message}`);
    return undefined;
  }
}

export const reportStage: StageImpl<'report'> = {
  async compute(run) {
    const p = run.params;
    const source = await run.dataset();
    const cleansed = await readCleansed(await run.input('relabel'));
    const evaluation = run.has('evaluate') ? await readJson<Evaluation>(join(await run.input('evaluate'), 'evaluation.json')) : undefined;
    const truth = run.has('attack') ? await readJson<PoisonTruth>(join(await run.input('attack'), 'truth.json')) : undefined;
    const report = buildReport({
      dataset: { name: source.manifest.name, hash: source.manifest.hash, samples: source.size, classes: source.classes },
      backend: ((await run.inputInfo('features')).backend ?? 'cpu') as AuditReport['backend'],
      config: p.config,
      detections: await readDetections(await run.input('detect')),
      cleansed,
      timings: p.timings,
      warnings: p.warnings,
      cachedStages: p.cachedStages,
      artifacts: p.artifacts,
      ...(p.run ? { run: p.run } : {}),
      ...(evaluation ? { evaluation } : {}),
      ...(truth ? { truth } : {}),
    });
    // The encoder's lineage (warm start, reuse) and the features' reuse, from their artifacts' facts.
    // (A report scheduled by a workflow from before `encoder` was its input has none.)
    const lineage = run.has('encoder') ? (await run.inputInfo('encoder')).lineage : undefined;
    const featureReuse = (await run.inputInfo('features')).featureReuse;
    if (lineage) report.lineage = { ...lineage, ...(featureReuse ? { features: featureReuse } : {}) };
    const devices: Record<string, string> = {};
    for (const id of ['encoder', 'features', 'density', 'evaluate'] as const) {
      const device = run.has(id) ? (await run.inputInfo(id)).device : undefined;
      if (device) devices[id] = device;
    }
    if (Object.keys(devices).length) report.devices = devices;
    const previous = await previousAudit(p.output, (w) => run.log(w));
    if (previous) report.sinceLastAudit = sinceLastAudit(diffAudits(previous, { report, cleansed }));
    const density = await readMatrix(await run.input('density'), 'density');
    const html = await buildReportPage({
      report,
      source,
      density,
      cleansed,
      ...(truth ? { truth } : {}),
      ...(report.sinceLastAudit
        ? { previous: { title: 'Since the last audit in this output folder', lines: report.sinceLastAudit.text } }
        : {}),
    });
    await writeAuditOutputs(run.out, report, cleansed, { html });
    const summary: AuditSummary = {
      datasetName: report.dataset.name,
      samples: report.dataset.samples,
      targetClasses: report.targetClasses.map((y) => report.dataset.classes[y] ?? String(y)),
      counts: report.counts,
      ...(report.evaluation ? { evaluation: report.evaluation } : {}),
      warnings: report.warnings?.length ?? 0,
      nearMisses: report.nearMisses
        .slice(0, 5)
        .map((m) => `${m.name} (${m.test} ${m.statistic.toFixed(m.test === 'disruptive' ? 3 : 2)} vs ${m.threshold})`),
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
    const html = await readFile(join(dir, 'report.html'), 'utf8');
    await writeAuditOutputs(p.output, report, await readCleansed(dir), { html });
    const outputs = ['report.json', 'report.html', 'cleansed.jsonl'].map((f) => join(p.output, f));
    log(`wrote ${outputs.join(', ')}`);
    return { outputs };
  },
};
