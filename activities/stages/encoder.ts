// Stage `encoder`: SimCLR on the training set (ml/simclr.ts), checkpointed every epoch, from
// scratch or warm-started from the parent the lineage stage found; a pointer to a pretrained
// model, whose folder fingerprint is part of the key; a pointer to an ONNX model, whose file's
// sha256 is part of the key; or a copy of an earlier audit's encoder (reuse: no training).
import { copyFile, cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { pathExists } from '../../data/files.js';
import { folderFingerprint } from '../../data/fingerprint.js';
import { sha256File } from '../../data/hash.js';
import { CHECKPOINT_FILE } from '../../ml/checkpoint.js';
import type { OnnxEncoderConfig } from '../../ml/config.js';
import type { EncoderLineage } from '../../ml/audit-report.js';
import { loadPretrainedEncoder } from '../../ml/encoder.js';
import type { FeatureEncoder } from '../../ml/features.js';
import { loadModel, saveModel } from '../../ml/model-io.js';
import { readWarmStart, trainSimclr, type SimclrWarmStart } from '../../ml/simclr.js';
import { StageInputError, type StageImpl, type StageRun } from '../stage.js';
import { readLineage } from './lineage.js';

const POINTER = 'pretrained.json';
/** The training run's final checkpoint, kept in a warm-startable encoder's artifact (weights, head, Adam state, RNG). */
const STATE = 'state';

export const encoderStage: StageImpl<'encoder'> = {
  async identity(params) {
    if (params.kind === 'pretrained') return { params, external: await folderFingerprint(params.path) };
    // The file's content, not its size and mtime: a re-export of the same size must change the key.
    if (params.kind === 'onnx') return { params, external: `onnx:${await onnxSha256(params.config.path)}` };
    return { params };
  },
  async compute(run) {
    const p = run.params;
    if (p.kind === 'pretrained') {
      // The model stays where it is (its fingerprint is in the key); the artifact points at it.
      await writeFile(join(run.out, POINTER), JSON.stringify({ path: p.path }) + '\n');
      return { info: { figure: `pretrained ${p.path}` } };
    }
    if (p.kind === 'onnx') {
      // As for a tfjs model, a pointer; with the hash, so that loading refuses a file changed since.
      const sha256 = await onnxSha256(p.config.path);
      await writeFile(join(run.out, POINTER), JSON.stringify({ onnx: p.config, sha256 } satisfies OnnxPointer) + '\n');
      return { info: { figure: `onnx ${p.config.path} (sha256 ${sha256.slice(0, 12)})` } };
    }
    if (p.kind === 'reuse') return reuse(run as StageRun<typeof p>);
    const hooks = run.training(); // first: its heartbeats carry the checkpoint a retry reads
    const backend = await run.backend(p.backend, 'training');
    const parent = p.config.warmStart === 'previous' ? await parentOf(run) : undefined;
    let lineage: EncoderLineage = { parentEncoder: null, cumulativeEpochs: p.config.epochs };
    if (parent && 'why' in parent) {
      run.log(`no parent encoder: ${parent.why}; training from scratch`);
      lineage = { ...lineage, reason: parent.why };
    }
    const warm = parent && 'warm' in parent ? parent.warm : undefined;
    if (parent && 'warm' in parent)
      run.log(
        `warm start from encoder ${parent.warm.parent.slice(0, 12)} (${parent.epochs} epochs so far` +
          `${parent.warm.state ? ', with its optimizer and data-order state' : ', weights only'}); training ${p.config.epochs} more`,
      );
    let result: Awaited<ReturnType<typeof trainSimclr>>;
    try {
      result = await trainSimclr(await run.dataset(), p.config, p.seed, hooks, warm);
    } finally {
      if (warm) tf.dispose([...warm.weights, ...(warm.state?.optimizer.slots ?? [])]);
    }
    const { encoder, losses, resumedFromEpoch, warmStartRefused } = result;
    if (warmStartRefused) {
      run.log(`no parent encoder: ${warmStartRefused}; training from scratch`);
      lineage = { ...lineage, reason: warmStartRefused };
    } else if (parent && 'warm' in parent) {
      lineage = { parentEncoder: parent.warm.parent, cumulativeEpochs: parent.epochs + p.config.epochs };
    }
    try {
      await saveModel(encoder, join(run.out, 'model'));
    } finally {
      encoder.dispose();
    }
    // The next night's warm start continues this run exactly from its final checkpoint (the last
    // epoch is always checkpointed). Only for lineages: it is about 3x the model's size.
    if (p.config.warmStart === 'previous' && hooks.checkpointDir) {
      await mkdir(join(run.out, STATE), { recursive: true });
      await copyFile(join(hooks.checkpointDir, CHECKPOINT_FILE), join(run.out, STATE, CHECKPOINT_FILE));
    }
    return {
      info: {
        figure:
          `loss ${losses.at(-1)?.toFixed(4)} after ${losses.length} epochs` +
          (lineage.parentEncoder ? ` (${lineage.cumulativeEpochs} in all, from ${lineage.parentEncoder.slice(0, 12)})` : ''),
        backend: backend.name,
        device: backend.device,
        lineage,
      },
      resumedFromEpoch,
    };
  },
};

/** The parent the lineage stage found, loaded for a warm start, or why there is none to load. */
async function parentOf(run: StageRun): Promise<{ warm: SimclrWarmStart; epochs: number } | { why: string }> {
  if (!run.has('parent')) return { why: 'no lineage stage ran' };
  const lineage = await readLineage(await run.input('parent'));
  if (!lineage.encoder) return { why: lineage.reason ?? 'none found' };
  // Verified again here: the lineage stage ran earlier, maybe on another worker.
  const found = await run.referenced(lineage.encoder);
  if ('why' in found) return { why: found.why };
  if (await pathExists(join(found.dir, POINTER))) return { why: 'the previous encoder is a pretrained model' };
  try {
    const state = join(found.dir, STATE);
    const warm = await readWarmStart(lineage.encoder.key, join(found.dir, 'model'), (await pathExists(state)) ? state : undefined);
    return { warm, epochs: lineage.cumulativeEpochs ?? 0 };
  } catch (err) {
    return { why: `encoder ${lineage.encoder.key.slice(0, 12)} cannot be read: ${(err as Error).message}` };
  }
}

/** Reuse: the lineage's encoder, copied as it is (a pretrained pointer or a trained model; not its training state). */
async function reuse(run: StageRun<{ kind: 'reuse'; from: string }>) {
  const lineage = await readLineage(await run.input('parent'));
  if (!lineage.encoder) throw new StageInputError(`${run.label}: no encoder to reuse: ${lineage.reason ?? 'none found'}`);
  const found = await run.referenced(lineage.encoder);
  if ('why' in found) throw new StageInputError(`${run.label}: the encoder to reuse ${found.why}`);
  for (const name of ['model', POINTER]) {
    if (await pathExists(join(found.dir, name))) await cp(join(found.dir, name), join(run.out, name), { recursive: true });
  }
  const origin = lineage.origin ?? lineage.encoder.key;
  const lineageInfo: EncoderLineage = { parentEncoder: lineage.encoder.key, cumulativeEpochs: lineage.cumulativeEpochs ?? 0 };
  return {
    info: { figure: `reused encoder ${lineage.encoder.key.slice(0, 12)} (no training)`, lineage: lineageInfo, origin },
  };
}

/** What an ONNX encoder artifact's pointer holds. */
interface OnnxPointer {
  onnx: OnnxEncoderConfig;
  sha256: string;
}

async function onnxSha256(path: string): Promise<string> {
  try {
    return (await sha256File(path)).sha256;
  } catch (err) {
    throw new StageInputError(
      `onnx encoder ${path}: cannot read the model: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
}

/** Whether an `encoder` artifact points at an ONNX model (run by ONNX Runtime, not tfjs). */
export async function isOnnxEncoder(dir: string): Promise<boolean> {
  const text = await readFile(join(dir, POINTER), 'utf8').catch(() => undefined);
  return text !== undefined && 'onnx' in (JSON.parse(text) as object);
}

/**
 * The encoder an `encoder` artifact holds (trained, the pretrained model it points at, or the
 * ONNX model it points at), and for ONNX what it runs on and why not CUDA when asked.
 */
export async function loadEncoder(dir: string, imageSize: number): Promise<{ encoder: FeatureEncoder; runsOn?: string; warning?: string }> {
  const text = await readFile(join(dir, POINTER), 'utf8').catch(() => undefined);
  if (text !== undefined) {
    const pointer = JSON.parse(text) as { path: string } | OnnxPointer;
    if ('onnx' in pointer) {
      // Loaded only here: ONNX Runtime (native) stays out of every other run.
      const { loadOnnxEncoder } = await import('../../ml/onnx-encoder.js');
      const encoder = await loadOnnxEncoder(pointer.onnx, pointer.sha256);
      return { encoder, runsOn: encoder.provider, ...(encoder.fallback ? { warning: encoder.fallback } : {}) };
    }
    return { encoder: await loadPretrainedEncoder(pointer.path, imageSize) };
  }
  return { encoder: await loadModel(join(dir, 'model')) };
}
