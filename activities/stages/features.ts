// Stage `features`: the encoder's features of every training sample (ml/features.ts), written
// standardised (`features`, what the flows read) and raw (`raw`, what a later reuse keeps).
// With a reused encoder (lineage mode 'reuse'), samples whose id and content hash are unchanged
// since the previous audit keep their raw rows; only new or changed ones go through the encoder.
// `inference.json` says how the rows were computed (the mirror averaged in or not), so that a
// reuse never puts rows of two kinds together.
import { join } from 'node:path';
import { openDataset } from '../../data/dataset.js';
import type { ResNetStage } from '../../ml/config.js';
import { encodeSamples, isBatchEncoder, mergeRows, unchangedRows, type FeatureEncoder } from '../../ml/features.js';
import { hasResNetStages, pooledStages } from '../../ml/resnet.js';
import { standardizeColumns, type Matrix } from '../../ml/matrix.js';
import type { StageImpl, StageRun } from '../stage.js';
import { readJson, readMatrix, writeJson, writeMatrix } from '../io.js';
import { isOnnxEncoder, loadEncoder } from './encoder.js';
import { readLineage } from './lineage.js';

export const featuresStage: StageImpl<'features'> = {
  async compute(run) {
    const source = await run.dataset();
    const reusing = run.has('lineage') && (await readLineage(await run.input('lineage'))).mode === 'reuse';
    const dir = await run.input('encoder');
    // Before a tfjs model loads (its weights live on the backend); an ONNX encoder runs on ONNX
    // Runtime, with no tensor backend to select (TensorFlow stays unloaded).
    const tfjs = (await isOnnxEncoder(dir)) ? undefined : await run.backend(run.params.backend, 'inference');
    const { encoder: loaded, runsOn, warning: loadWarning } = await loadEncoder(dir, source.height);
    const backend = runsOn ?? tfjs?.name;
    const device = runsOn ? `${runsOn.endsWith('cuda') ? 'GPU' : 'CPU'}: ${runsOn}` : tfjs?.device;
    if (loadWarning) run.log(loadWarning);
    try {
      const { encoder, warning: stagesWarning } = run.params.stages
        ? withStages(loaded, run.params.stages)
        : { encoder: loaded, warning: undefined };
      if (stagesWarning) run.log(stagesWarning);
      const warnings = [loadWarning, stagesWarning].filter((w) => w !== undefined);
      const inference: FeatureInference = { flipAverage: run.params.flipAverage ?? false };
      const previous = reusing
        ? await previousFeatures(run, { ids: source.ids, hashes: source.contentHashes }, featureWidth(encoder), inference)
        : undefined;
      const todo = previous ? Int32Array.from(previous.from.keys()).filter((i) => previous.from[i] < 0) : undefined;
      const computed = await encodeSamples(
        encoder,
        source,
        {
          batchSize: run.params.batchSize,
          flipAverage: inference.flipAverage,
          ...(run.runtime.signal ? { signal: run.runtime.signal } : {}),
          onBatch: (done, total) => run.runtime.heartbeat({ batch: done, batches: total }),
        },
        todo,
      );
      const raw = previous ? mergeRows(previous.from, previous.raw, computed) : computed;
      const features = standardizeColumns(raw);
      await writeMatrix(run.out, 'features', features);
      await writeMatrix(run.out, 'raw', raw);
      await writeJson(join(run.out, INFERENCE_FILE), inference);
      const featureReuse = previous
        ? { recomputed: computed.rows, reused: raw.rows - computed.rows, from: previous.key }
        : reusing
          ? { recomputed: raw.rows, reused: 0, from: null }
          : undefined;
      if (featureReuse)
        run.log(
          `${featureReuse.recomputed} of ${raw.rows} samples through the encoder (new or changed content), ` +
            `${featureReuse.reused} rows reused${previous ? ` from features ${previous.key.slice(0, 12)}` : ''}`,
        );
      return {
        info: {
          figure: `${features.rows} x ${features.cols} features` + (featureReuse ? `, ${featureReuse.recomputed} recomputed` : ''),
          backend,
          ...(device ? { device } : {}),
          ...(featureReuse ? { featureReuse } : {}),
          ...(warnings.length ? { warnings } : {}),
        },
      };
    } finally {
      await loaded.dispose(); // a view of pooled stages shares its weights
    }
  },
};

/** How a features artifact's rows were computed. */
interface FeatureInference {
  flipAverage: boolean;
}
const INFERENCE_FILE = 'inference.json';

/** An artifact's FeatureInference; one written before the file existed computed on the image alone. */
async function readInference(dir: string): Promise<FeatureInference> {
  try {
    return await readJson<FeatureInference>(join(dir, INFERENCE_FILE));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { flipAverage: false };
    throw e;
  }
}

/**
 * The previous audit's raw features and, per current sample, its row there (-1: new or changed),
 * when the lineage offers features computed with the same weights; else undefined (all computed).
 */
async function previousFeatures(
  run: StageRun,
  current: { ids: readonly string[]; hashes: readonly string[] },
  width: number | undefined,
  inference: FeatureInference,
): Promise<{ raw: Matrix; from: Int32Array; key: string } | undefined> {
  const lineage = await readLineage(await run.input('lineage'));
  const skip = (why: string) => {
    run.log(`every sample goes through the encoder: ${why}`);
    return undefined;
  };
  if (!lineage.features || !lineage.dataset) return skip(lineage.reason ?? 'no previous features');
  const features = await run.referenced(lineage.features);
  if ('why' in features) return skip(features.why);
  const dataset = await run.referenced(lineage.dataset);
  if ('why' in dataset) return skip(dataset.why);
  let raw: Matrix;
  try {
    raw = await readMatrix(features.dir, 'raw');
  } catch {
    return skip(`features ${lineage.features.key.slice(0, 12)} kept no raw rows (written before reuse existed)`);
  }
  if ((await readInference(features.dir)).flipAverage !== inference.flipAverage)
    return skip(
      `previous features were computed ${inference.flipAverage ? 'on the image alone' : 'with the mirror averaged in'} (audit.features.flipAverage changed)`,
    );
  // Same weights, other pooled stages (audit.features.stages changed): other columns.
  if (width !== undefined && raw.cols !== width)
    return skip(`previous features have ${raw.cols} columns, these ${width} (audit.features.stages changed)`);
  const before = await openDataset(join(dataset.dir, 'dataset'));
  try {
    if (before.size !== raw.rows) return skip(`previous features have ${raw.rows} rows for ${before.size} samples`);
    return { raw, from: unchangedRows(current, { ids: before.ids, hashes: before.contentHashes }), key: lineage.features.key };
  } finally {
    await before.close();
  }
}

/**
 * The encoder's pooled stages (ml/resnet.ts). Only a ResNet built by this project has them: the
 * pipeline refuses stages for a pretrained or ONNX encoder, but a reuse learns what it reuses only
 * here, so another encoder's features stay its output, with a warning.
 */
function withStages(encoder: FeatureEncoder, stages: ResNetStage[]): { encoder: FeatureEncoder; warning?: string } {
  const asOutput = (why: string) => ({
    encoder,
    warning: `audit.features.stages [${stages.join(', ')}] not applied: ${why}; its output is the features`,
  });
  if (isBatchEncoder(encoder)) return asOutput(`the encoder ${encoder.name} is an ONNX model`);
  if (!hasResNetStages(encoder, stages)) return asOutput(`the encoder ${encoder.name} is not a ResNet-18 built by this project`);
  return { encoder: pooledStages(encoder, stages) };
}

/** Columns the encoder's features have, when the model says (an ONNX model's say only once it runs). */
function featureWidth(encoder: FeatureEncoder): number | undefined {
  return isBatchEncoder(encoder) ? undefined : (encoder.outputs[0].shape[1] ?? undefined);
}
