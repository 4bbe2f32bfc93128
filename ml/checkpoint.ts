// Training checkpoints (SimCLR, classifier): everything a run needs to continue exactly where
// it stopped, so a retried activity gives the same weights as an uninterrupted run.
// One file, `checkpoint.bin`: magic, header length, JSON header, raw tensor bytes. Replaced
// atomically, so a crash while saving leaves the previous checkpoint intact.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { writeFileAtomic } from '../data/files.js';
import type { OptimizerState } from './optim.js';

export const CHECKPOINT_FILE = 'checkpoint.bin';
const MAGIC = 'BDCKPT1\n';

export interface TrainingCheckpoint {
  /** Identifies the run (config + seed); a checkpoint of a different run is refused. */
  fingerprint: string;
  /** Epochs completed. */
  epoch: number;
  /** `Rng.state` after the last completed epoch. */
  rngState: number;
  /** Mean loss of each completed epoch. */
  losses: number[];
  /** Model weights, trainable and not (BatchNorm statistics), in `getWeights()` order. */
  weights: tf.Tensor[];
  optimizer: OptimizerState;
  /** Plain JSON state beyond one rng and one epoch count (a flow group's per-class positions). */
  extra?: unknown;
}

interface Header {
  fingerprint: string;
  epoch: number;
  rngState: number;
  losses: number[];
  weightCount: number;
  optimizer: { kind: OptimizerState['kind']; step: number; slotCount: number };
  specs: tf.io.WeightsManifestEntry[];
  extra?: unknown;
}

/** Writes the checkpoint into `dir` (replacing any previous one) and returns the file path. */
export async function saveCheckpoint(dir: string, c: TrainingCheckpoint): Promise<string> {
  const named: { name: string; tensor: tf.Tensor }[] = [
    ...c.weights.map((tensor, i) => ({ name: `weight/${i}`, tensor })),
    ...c.optimizer.slots.map((tensor, i) => ({ name: `slot/${i}`, tensor })),
  ];
  const { data, specs } = await tf.io.encodeWeights(named);
  const header: Header = {
    fingerprint: c.fingerprint,
    epoch: c.epoch,
    rngState: c.rngState,
    losses: c.losses,
    weightCount: c.weights.length,
    optimizer: { kind: c.optimizer.kind, step: c.optimizer.step, slotCount: c.optimizer.slots.length },
    specs,
    ...(c.extra !== undefined ? { extra: c.extra } : {}),
  };
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(json.length, 0);
  const file = path.join(dir, CHECKPOINT_FILE);
  await writeFileAtomic(file, Buffer.concat([Buffer.from(MAGIC, 'latin1'), len, json, new Uint8Array(data)]));
  return file;
}

/**
 * Reads the checkpoint in `dir`; undefined when there is none. Throws, naming the file, when
 * it is corrupt or belongs to another run (`fingerprint` differs). The caller owns the tensors.
 * `fingerprint` null reads any run's checkpoint: a warm start continues another run's state.
 */
export async function loadCheckpoint(dir: string, fingerprint: string | null): Promise<TrainingCheckpoint | undefined> {
  const file = path.join(dir, CHECKPOINT_FILE);
  let buf: Buffer;
  try {
    buf = await fs.readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const bad = (why: string) => new Error(`checkpoint ${file}: ${why}`);
  if (buf.length < MAGIC.length + 4 || buf.toString('latin1', 0, MAGIC.length) !== MAGIC) throw bad('not a checkpoint file');
  const jsonLen = buf.readUInt32LE(MAGIC.length);
  const start = MAGIC.length + 4 + jsonLen;
  if (start > buf.length) throw bad('truncated header');
  let header: Header;
  try {
    header = JSON.parse(buf.toString('utf8', MAGIC.length + 4, start)) as Header;
  } catch (err) {
    throw bad(`unreadable header: ${(err as Error).message}`);
  }
  if (fingerprint !== null && header.fingerprint !== fingerprint) {
    throw bad(
      `written by a different run (fingerprint ${header.fingerprint}, this run ${fingerprint}); delete it or use another checkpoint folder`,
    );
  }
  const data = buf.buffer.slice(buf.byteOffset + start, buf.byteOffset + buf.length) as ArrayBuffer;
  let tensors: tf.NamedTensorMap;
  try {
    tensors = tf.io.decodeWeights(data, header.specs);
  } catch (err) {
    throw bad(`tensor data does not match its header: ${(err as Error).message}`);
  }
  const take = (prefix: string, n: number) =>
    Array.from({ length: n }, (_, i) => {
      const t = tensors[`${prefix}/${i}`];
      if (!t) throw bad(`missing tensor ${prefix}/${i}`);
      return t;
    });
  return {
    fingerprint: header.fingerprint,
    epoch: header.epoch,
    rngState: header.rngState,
    losses: header.losses,
    weights: take('weight', header.weightCount),
    optimizer: { kind: header.optimizer.kind, step: header.optimizer.step, slots: take('slot', header.optimizer.slotCount) },
    ...(header.extra !== undefined ? { extra: header.extra } : {}),
  };
}
