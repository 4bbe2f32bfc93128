// Starting, attaching to and following audit workflows. The workflow id is derived from the
// pipeline's content and the dataset's identity, so running the same audit twice attaches to
// the live run instead of starting a duplicate.
import { WorkflowExecutionAlreadyStartedError, type Client, type WorkflowHandle } from '@temporalio/client';
import { canonicalJson, sha256Hex } from '../data/hash.js';
import { datasetFingerprint } from '../data/fingerprint.js';
import type { auditWorkflow } from '../workflows/audit.js';
import { datasetKey, progressQuery, verdictKey } from '../workflows/definitions.js';
import type { AuditProgress, AuditResult, Pipeline } from '../workflows/types.js';

export type AuditHandle = WorkflowHandle<typeof auditWorkflow>;

/**
 * The pipeline with its datasets' fingerprints filled in: computed once per run, they name the
 * workflow and key the ingests (the workers do not fingerprint the files again).
 */
async function withFingerprints(pipeline: Pipeline): Promise<Pipeline> {
  const { dataset, testSet } = pipeline;
  return {
    ...pipeline,
    dataset: { ...dataset, fingerprint: dataset.fingerprint ?? (await datasetFingerprint(dataset.source)) },
    ...(testSet ? { testSet: { ...testSet, fingerprint: testSet.fingerprint ?? (await datasetFingerprint(testSet.source)) } } : {}),
  };
}

/** Identity of the audit: everything that changes its result, not where the file lies or how Temporal runs it. */
export async function auditIdentity(pipeline: Pipeline): Promise<string> {
  const p = await withFingerprints(pipeline);
  const { file: _file, description: _description, temporal: _temporal, dataset, testSet, ...rest } = p;
  const { fingerprint: trainPrint, ...train } = dataset;
  const datasets = [trainPrint];
  const content: Record<string, unknown> = { ...rest, dataset: train };
  if (testSet) {
    const { fingerprint: testPrint, ...test } = testSet;
    datasets.push(testPrint);
    content.testSet = test;
  }
  return sha256Hex(canonicalJson({ content, datasets }));
}

export async function workflowIdFor(pipeline: Pipeline): Promise<string> {
  return pipeline.temporal.workflowId ?? `audit-${pipeline.name}-${(await auditIdentity(pipeline)).slice(0, 16)}`;
}

/** Options shared by a direct start and a schedule's action. */
export function startOptions(pipeline: Pipeline, workflowId: string) {
  const datasetName = pipeline.dataset.name ?? pipeline.name;
  return {
    taskQueue: pipeline.temporal.taskQueues.cpu,
    workflowId,
    args: [pipeline] as [Pipeline],
    typedSearchAttributes: [
      { key: datasetKey, value: datasetName },
      { key: verdictKey, value: 'running' },
    ],
    memo: { pipeline: pipeline.name, pipelineFile: pipeline.file },
    staticSummary: `audit '${pipeline.name}' of ${datasetName}`,
    staticDetails: [pipeline.description ?? '', `pipeline file: ${pipeline.file}`, `output: ${pipeline.output}`]
      .filter(Boolean)
      .join('\n\n'),
  };
}

export interface StartedAudit {
  handle: AuditHandle;
  workflowId: string;
  /** True when a run of the same audit was already live and this call joined it. */
  attached: boolean;
}

/** Starts the audit, or attaches to the live run with the same id. */
export async function startAudit(client: Client, given: Pipeline, workflowId?: string): Promise<StartedAudit> {
  const pipeline = await withFingerprints(given);
  const id = workflowId ?? (await workflowIdFor(pipeline));
  const existing = client.workflow.getHandle<typeof auditWorkflow>(id);
  const running = await existing
    .describe()
    .then((d) => d.status.name === 'RUNNING')
    .catch(() => false);
  if (running) return { handle: existing, workflowId: id, attached: true };
  try {
    const handle = await client.workflow.start<typeof auditWorkflow>('auditWorkflow', {
      ...startOptions(pipeline, id),
      // A run that started between the describe and here is joined, not duplicated.
      workflowIdConflictPolicy: 'USE_EXISTING',
    });
    return { handle, workflowId: id, attached: false };
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) return { handle: existing, workflowId: id, attached: true };
    throw err;
  }
}

/** The progress table, or undefined while no worker can answer the query. */
export async function queryProgress(handle: WorkflowHandle): Promise<AuditProgress | undefined> {
  try {
    return await handle.query(progressQuery);
  } catch {
    return undefined;
  }
}

/**
 * Polls progress until the workflow closes and returns its result. `onProgress` sees every
 * snapshot (undefined while no worker answers).
 */
export async function followAudit(
  handle: AuditHandle,
  onProgress: (p: AuditProgress | undefined) => void,
  intervalMs = 1000,
): Promise<AuditResult> {
  let settled = false;
  const result = handle.result().finally(() => {
    settled = true;
  });
  result.catch(() => undefined);
  while (!settled) {
    const p = await Promise.race([
      queryProgress(handle),
      result.then(
        () => undefined,
        () => undefined,
      ),
    ]);
    if (settled) break;
    onProgress(p);
    await Promise.race([new Promise((r) => setTimeout(r, intervalMs)), result.catch(() => undefined)]);
  }
  const out = await result;
  // The result carries references only; the final table comes from a query of the closed run.
  const final = await queryProgress(handle);
  if (final) onProgress(final);
  return out;
}
