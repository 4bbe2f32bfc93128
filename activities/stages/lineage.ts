// Stage `lineage`: finds, at run time, the audit this one builds on: the report.json the last
// audit of the pipeline left in its output folder names its artifacts (`artifacts.encoder`,
// `artifacts.features`, ...). For a warm start it is the parent encoder to continue; for a
// reuse, the encoder to copy and the previous features and training set whose unchanged rows
// are kept. The artifacts are looked up and verified in the store here, so a missing or
// corrupted parent is a reason ("no parent encoder: ...") and not a failure downstream.
//
// Its key is the hash of what it found (identity: the external part), never of the run: a rerun
// with the same parent has the same lineage key, so the encoder and features keyed by it are
// cache hits, and a new parent gives new keys all the way down.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ArtifactRef, ArtifactStore } from '../../data/artifacts.js';
import { canonicalJson, sha256Hex } from '../../data/hash.js';
import type { AuditReport } from '../../ml/audit-report.js';
import type { LineageParams } from '../../workflows/stage-params.js';
import type { StageInfo } from '../../workflows/types.js';
import { StageInputError, type StageImpl } from '../stage.js';

export const LINEAGE_FILE = 'lineage.json';

/** What the lineage artifact holds (lineage.json): a function of its key. */
export interface Lineage {
  mode: LineageParams['mode'];
  /** The encoder to continue (warm start) or copy (reuse); absent: none, `reason` says why. */
  encoder?: ArtifactRef;
  /** SimCLR epochs behind `encoder` over its whole lineage. */
  cumulativeEpochs?: number;
  /** Reuse: the encoder whose weights `encoder` holds (the first of a chain of reused copies). */
  origin?: string;
  /** Reuse: the previous audit's features and training set, computed with the same weights. */
  features?: ArtifactRef;
  dataset?: ArtifactRef;
  /** Why there is no parent (warm start), no encoder (reuse), or no features to reuse. */
  reason?: string;
}

/** Reads lineage.json from a lineage artifact's folder. */
export async function readLineage(dir: string): Promise<Lineage> {
  return JSON.parse(await readFile(join(dir, LINEAGE_FILE), 'utf8')) as Lineage;
}

export const lineageStage: StageImpl<'lineage'> = {
  // The key is computed just before compute looks again; the look is idempotent (a parent found
  // corrupted by the first is quarantined, and the second says the same), so both agree.
  async identity(params, store) {
    return { params, external: sha256Hex(canonicalJson(await resolveLineage(params, store))) };
  },
  async compute(run) {
    const p = run.params;
    const lineage = await resolveLineage(p, run.artifactStore);
    await writeFile(join(run.out, LINEAGE_FILE), JSON.stringify(lineage, null, 1) + '\n');
    if (p.mode === 'reuse' && !lineage.encoder)
      throw new StageInputError(`encoder.kind reuse (from ${p.from}): no encoder to reuse: ${lineage.reason ?? 'none found'}`);
    const figure = lineage.encoder
      ? `${p.mode === 'reuse' ? 'encoder' : 'parent encoder'} ${lineage.encoder.key.slice(0, 12)} (${lineage.cumulativeEpochs ?? 0} epochs so far)` +
        (p.mode === 'reuse'
          ? lineage.features
            ? `, features ${lineage.features.key.slice(0, 12)}`
            : `; no features to reuse: ${lineage.reason}`
          : '')
      : `no parent encoder: ${lineage.reason}`;
    return { info: { figure } }; // the engine logs it
  },
};

/** The previous audit's report.json in the output folder, or why there is none to build on. */
async function previousReport(output: string): Promise<{ report: AuditReport; file: string } | { why: string }> {
  const file = join(output, 'report.json');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { why: `no previous audit (no report.json in ${output})` };
    return { why: `cannot read ${file}: ${(err as Error).message}` };
  }
  try {
    return { report: JSON.parse(text) as AuditReport, file };
  } catch (err) {
    return { why: `${file} is not valid JSON (${(err as Error).message})` };
  }
}

/** The published, verified artifact of `stage` under `key`, or why it cannot be used. */
async function verified(
  store: ArtifactStore,
  stage: string,
  key: string,
): Promise<{ ref: ArtifactRef; info: StageInfo } | { why: string }> {
  const what = `${stage} artifact ${key.slice(0, 12)}`;
  let ref: ArtifactRef | undefined;
  try {
    ref = await store.lookup(stage, key); // verifies every file; a damaged copy goes to quarantine
  } catch (err) {
    return { why: `${what}: ${(err as Error).message}` };
  }
  if (!ref) {
    return {
      why: (await store.quarantined(key))
        ? `${what} failed its hash check (corrupted; moved to quarantine)`
        : `${what} is not in the store ${store.root}`,
    };
  }
  const info = JSON.parse(await readFile(join(store.dir(ref), 'info.json'), 'utf8')) as StageInfo;
  return { ref, info };
}

/** The parent's epochs: recorded by the encoder stage, else (an older artifact) its audit's config. */
function epochsOf(info: StageInfo, report: AuditReport | undefined): number {
  if (info.lineage) return info.lineage.cumulativeEpochs;
  return report?.config.encoder.kind === 'simclr' ? report.config.encoder.epochs : 0;
}

export async function resolveLineage(p: LineageParams, store: ArtifactStore): Promise<Lineage> {
  const prev = await previousReport(p.output);
  const report = 'report' in prev ? prev.report : undefined;
  const previousEncoder = report?.artifacts?.encoder;

  if (p.mode === 'warm-start') {
    if (!report) return { mode: p.mode, reason: (prev as { why: string }).why };
    if (!previousEncoder) return { mode: p.mode, reason: `${join(p.output, 'report.json')} names no encoder artifact (an older report)` };
    const enc = report.config.encoder;
    const want = p.architecture;
    if (enc.kind === 'pretrained' || enc.kind === 'onnx')
      return { mode: p.mode, reason: `the previous audit used a${enc.kind === 'onnx' ? 'n ONNX' : ''} pretrained encoder, not SimCLR` };
    if (enc.kind === 'simclr' && want && (enc.width !== want.width || enc.stem !== want.stem || enc.projectionDim !== want.projectionDim))
      return {
        mode: p.mode,
        reason: `the previous encoder is width ${enc.width}, stem ${enc.stem}, projection ${enc.projectionDim}; this pipeline's is width ${want.width}, stem ${want.stem}, projection ${want.projectionDim}`,
      };
    if (report.config.imageSize !== p.imageSize)
      return { mode: p.mode, reason: `the previous audit's images were ${report.config.imageSize} px, these are ${p.imageSize} px` };
    const found = await verified(store, 'encoder', previousEncoder);
    if ('why' in found) return { mode: p.mode, reason: found.why };
    return { mode: p.mode, encoder: found.ref, cumulativeEpochs: epochsOf(found.info, report) };
  }

  // Reuse: the encoder first (required), then the features worth keeping (optional).
  const key = p.from === 'previous' ? previousEncoder : p.from;
  if (!key)
    return { mode: p.mode, reason: report ? `${join(p.output, 'report.json')} names no encoder artifact` : (prev as { why: string }).why };
  const found = await verified(store, 'encoder', key);
  if ('why' in found) return { mode: p.mode, reason: found.why };
  const origin = found.info.origin ?? key;
  const base: Lineage = {
    mode: p.mode,
    encoder: found.ref,
    cumulativeEpochs: epochsOf(found.info, key === previousEncoder ? report : undefined),
    origin,
  };
  if (!report) return { ...base, reason: (prev as { why: string }).why };
  const a = report.artifacts ?? {};
  const datasetKey = a.attack ?? a.ingest;
  if (!a.features || !datasetKey || !previousEncoder) return { ...base, reason: 'the previous report names no features or training set' };
  if (report.config.imageSize !== p.imageSize)
    return { ...base, reason: `the previous audit's images were ${report.config.imageSize} px, these are ${p.imageSize} px` };
  // Its features were computed with the same weights only if its encoder is a copy of the same origin.
  if (previousEncoder !== key) {
    const prevEnc = await verified(store, 'encoder', previousEncoder);
    const prevOrigin = 'why' in prevEnc ? undefined : (prevEnc.info.origin ?? previousEncoder);
    if (prevOrigin !== origin)
      return { ...base, reason: `the previous features come from another encoder (${previousEncoder.slice(0, 12)})` };
  }
  const features = await verified(store, 'features', a.features);
  if ('why' in features) return { ...base, reason: features.why };
  const dataset = await verified(store, a.attack ? 'attack' : 'ingest', datasetKey);
  if ('why' in dataset) return { ...base, reason: dataset.why };
  return { ...base, features: features.ref, dataset: dataset.ref };
}
