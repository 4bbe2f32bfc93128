// The one epoch loop behind every long training run (SimCLR, classifier): seeded data order,
// cooperative yielding, cancellation at the next batch, checkpoint and exact resume.
import * as tf from '@tensorflow/tfjs-core';
import { loadCheckpoint, saveCheckpoint } from './checkpoint.js';
import type { Optimizer } from './optim.js';
import { Rng } from './random.js';

export interface TrainProgress {
  /** Epochs completed (1-based after the first epoch). */
  epoch: number;
  epochs: number;
  /** Mean batch loss of this epoch. */
  loss: number;
  /** Path of the checkpoint written after this epoch, if one was. */
  checkpoint?: string;
  /** Epoch the run resumed from (0 when it started fresh). */
  resumedFromEpoch?: number;
  /** Learning rate used in this epoch. */
  lr?: number;
}

export interface TrainHooks {
  /** Aborting stops the run before its next batch with an AbortError. */
  signal?: AbortSignal;
  /** Folder for the checkpoint; a checkpoint found there on start is resumed. */
  checkpointDir?: string;
  /** Checkpoint every this many epochs (default 1); the last epoch is always checkpointed. */
  checkpointEvery?: number;
  onEpoch?: (p: TrainProgress) => void | Promise<void>;
  onBatch?: (done: number, total: number) => void | Promise<void>;
  log?: (line: string) => void;
}

/** Thrown when `hooks.signal` aborts a run. */
export class AbortError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AbortError';
  }
}

export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw new AbortError(`${what}: aborted`, { cause: signal.reason });
}

/** Lets timers and I/O (a Temporal heartbeat) run between batches. */
export const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

export interface EpochLoop {
  /** Names the run in messages. */
  name: string;
  epochs: number;
  /** Sample indices to train on; each epoch visits them in a fresh random order. */
  pool: Int32Array;
  batchSize: number;
  /** A trailing batch smaller than this is skipped (NT-Xent needs negatives). */
  minBatch: number;
  /** Seeds data order and augmentation; replaced by the checkpoint's state on resume. */
  rng: Rng;
  /** Config + seed of the run: a checkpoint of another run is refused. */
  fingerprint: string;
  /** All weights that define the run's models, including BatchNorm statistics. */
  getWeights(): tf.Tensor[];
  setWeights(weights: tf.Tensor[]): void;
  optimizer: Optimizer;
  /** Called before each epoch (0-based index), e.g. to set the learning rate. */
  beforeEpoch?: (epoch: number) => void;
  /** One optimisation step on these samples; returns the batch loss. */
  step: (indices: Int32Array, rng: Rng) => Promise<number>;
  hooks?: TrainHooks;
}

/** Runs (or resumes) the epochs; returns the per-epoch mean losses of the whole run. */
export async function runEpochs(l: EpochLoop): Promise<{ losses: number[]; resumedFromEpoch: number }> {
  const hooks = l.hooks ?? {};
  const log = hooks.log ?? (() => {});
  const every = hooks.checkpointEvery ?? 1;
  if (!Number.isInteger(every) || every < 1) throw new Error(`${l.name}: checkpointEvery must be a positive integer, got ${every}`);
  if (!Number.isInteger(l.batchSize) || l.batchSize < 1)
    throw new Error(`${l.name}: batchSize must be a positive integer, got ${l.batchSize}`);
  if (l.pool.length < l.minBatch) throw new Error(`${l.name}: ${l.pool.length} samples, need at least ${l.minBatch}`);

  let rng = l.rng;
  let losses: number[] = [];
  let start = 0;
  if (hooks.checkpointDir) {
    const ckpt = await loadCheckpoint(hooks.checkpointDir, l.fingerprint);
    if (ckpt) {
      try {
        l.setWeights(ckpt.weights);
        l.optimizer.load(ckpt.optimizer);
      } catch (err) {
        throw new Error(`${l.name}: checkpoint in ${hooks.checkpointDir} does not fit the model: ${(err as Error).message}`);
      } finally {
        tf.dispose([...ckpt.weights, ...ckpt.optimizer.slots]);
      }
      rng = Rng.fromState(ckpt.rngState);
      losses = ckpt.losses.slice();
      start = ckpt.epoch;
      log(`${l.name}: resumed from epoch ${start} (${hooks.checkpointDir})`);
    }
  }

  const n = l.pool.length;
  const full = Math.floor(n / l.batchSize);
  const batches = full + (n - full * l.batchSize >= l.minBatch && n % l.batchSize !== 0 ? 1 : 0);
  for (let epoch = start; epoch < l.epochs; epoch++) {
    l.beforeEpoch?.(epoch);
    const order = rng.permutation(n);
    let sum = 0;
    for (let b = 0; b < batches; b++) {
      throwIfAborted(hooks.signal, `${l.name} epoch ${epoch + 1} batch ${b + 1}/${batches}`);
      const idx = new Int32Array(Math.min(l.batchSize, n - b * l.batchSize));
      for (let i = 0; i < idx.length; i++) idx[i] = l.pool[order[b * l.batchSize + i]];
      const loss = await l.step(idx, rng);
      if (!Number.isFinite(loss)) throw new Error(`${l.name}: loss is ${loss} at epoch ${epoch + 1} batch ${b + 1}`);
      sum += loss;
      await hooks.onBatch?.(b + 1, batches);
      await yieldToEventLoop();
    }
    const loss = sum / batches;
    losses.push(loss);
    const done = epoch + 1;
    let checkpoint: string | undefined;
    if (hooks.checkpointDir && (done % every === 0 || done === l.epochs)) {
      checkpoint = await saveCheckpoint(hooks.checkpointDir, {
        fingerprint: l.fingerprint,
        epoch: done,
        rngState: rng.state,
        losses,
        weights: l.getWeights(),
        optimizer: l.optimizer.state(),
      });
    }
    log(`${l.name}: epoch ${done}/${l.epochs} loss ${loss.toFixed(4)}`);
    await hooks.onEpoch?.({ epoch: done, epochs: l.epochs, loss, checkpoint, resumedFromEpoch: start, lr: l.optimizer.lr });
  }
  return { losses, resumedFromEpoch: start };
}

/** The trainable variables of tfjs-layers weights, for tf.variableGrads and the optimisers. */
export function trainableVariables(weights: readonly { read(): tf.Tensor }[]): tf.Variable[] {
  // LayerVariable.read() returns the tf.Variable it wraps.
  return weights.map((w) => w.read() as tf.Variable);
}

/** One gradient step: loss from `f`, gradients for `vars`, update by `optimizer`. Returns the loss. */
export async function gradientStep(f: () => tf.Scalar, vars: tf.Variable[], optimizer: Optimizer): Promise<number> {
  const loss = tf.tidy(() => {
    const { value, grads } = tf.variableGrads(f, vars);
    optimizer.step(
      vars.map((v) => {
        const g = grads[v.name];
        // A weight the loss does not reach gets a zero gradient (weight decay still applies).
        return g ?? tf.zerosLike(v);
      }),
    );
    return value;
  });
  const v = (await loss.data())[0];
  loss.dispose();
  return v;
}
