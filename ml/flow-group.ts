// The flows of several classes trained in lockstep as one batched model (issue 12). A flow at
// batch 16 is a few hundred tiny tensor operations per step, so its time is the per-operation
// cost, not arithmetic: stacking G classes' weights ([G, ...] variables, batched matMuls) pays
// that cost once per step for all G.
//
// What is equal to training each class alone (`trainClassFlow`, same config, same seed): the
// initial weights (same `initialFlowParams` and seed), the standardisation, the data order
// (each class draws its permutations from its own `Rng(seed).fork(1)`, one per epoch of its
// own), the batches (each class's steps take the rows its own loop would, a short trailing
// batch included), the loss (each class's batch-mean NLL; rows padding a short batch weigh 0)
// and Adam (each class's own moments and bias-correction step count, betas, epsilon). A class
// with fewer batches per epoch finishes its epochs early and is frozen (no update, no moment
// change) while the larger classes go on. So each class's trained weights equal the
// single-class trainer's up to float summation order inside the batched kernels (bit-equal on
// the plain-JS backend for full batches; within ~1e-5 relative elsewhere), and so do its NLLs.
//
// Why not ml/loop.ts's runEpochs: it walks one pool in epochs; here every class walks its own
// epochs at its own pace within one loop. The rest is shared: the checkpoint file
// (ml/checkpoint.ts, per-class positions in its `extra`), cancellation, hooks, yielding.
// The batched model, its per-member Adam and one lockstep step are ml/stacked-flows.ts; this
// file is the loop: each member's cursor through its own epochs, checkpoints, the flows out.
import * as tf from '@tensorflow/tfjs-core';
import type { FlowConfig } from './config.js';
import { loadCheckpoint, saveCheckpoint } from './checkpoint.js';
import { checkFlowFeatures, ClassFlow, initialFlowParams, TRAINABLE_NAMES, validateFlowConfig, type FlowParams } from './flow.js';
import { throwIfAborted, yieldToEventLoop, type TrainHooks } from './loop.js';
import { featureMoments, type Matrix } from './matrix.js';
import { Rng } from './random.js';
import { groupStep, MemberAdam, StackedFlows, type TrainableName } from './stacked-flows.js';
import { canonicalJson, sha256Hex } from '../data/hash.js';

/** One class of a group: its training rows and the seed its own flow would be trained with. */
export interface FlowGroupMember {
  features: Matrix;
  seed: number;
}

export interface FlowGroupResult {
  /** One flow per member, in member order (the caller disposes them). */
  flows: ClassFlow[];
  /** Per member, its per-epoch mean batch NLL, as `trainClassFlow` reports it. */
  nll: number[][];
  /** Group epoch the run resumed from (0 when it started fresh). */
  resumedFromEpoch: number;
}

/** Where one member stands in its own epochs: what its own training loop would hold. */
interface Cursor {
  rows: number;
  /** Batches per epoch: every trailing batch trained (trainClassFlow's minBatch 1). */
  batches: number;
  rng: Rng;
  /** The rng state before this epoch's permutation was drawn (a checkpoint stores it). */
  epochStart: number;
  order: Int32Array | null;
  epoch: number;
  batch: number;
  /** Sum of this epoch's batch losses so far. */
  sum: number;
  losses: number[];
}

/** A member's position in a checkpoint's `extra`. */
interface SavedCursor {
  rngState: number;
  epoch: number;
  batch: number;
  sum: number;
  losses: number[];
}

interface SavedGroup {
  format: 'flow-group@1';
  step: number;
  members: SavedCursor[];
}

/**
 * Trains one flow per member, all in lockstep (see the header for what equals training each
 * alone). The group's epoch is one epoch of its member with the most batches: progress,
 * `hooks.onEpoch` and checkpoints (every `checkpointEvery` group epochs and the last) count
 * in it, and a run resumed from its checkpoint continues to the same weights as one never
 * stopped. Cancellation stops at the next step with an AbortError.
 */
export async function trainFlowGroup(
  members: readonly FlowGroupMember[],
  cfg: FlowConfig,
  hooks: TrainHooks = {},
): Promise<FlowGroupResult> {
  validateFlowConfig(cfg);
  if (members.length === 0) throw new Error('trainFlowGroup: no members');
  const dim = members[0].features.cols;
  members.forEach((m, i) => {
    checkFlowFeatures(m.features, `trainFlowGroup: member ${i}`);
    if (m.features.cols !== dim) throw new Error(`trainFlowGroup: member ${i} has ${m.features.cols} columns, member 0 has ${dim}`);
  });
  const every = hooks.checkpointEvery ?? 1;
  if (!Number.isInteger(every) || every < 1) throw new Error(`flow group: checkpointEvery must be a positive integer, got ${every}`);
  const log = hooks.log ?? (() => {});
  const g = members.length;
  const B = cfg.batchSize;

  const params = members.map((m) => {
    const { mean, std } = featureMoments(m.features);
    return initialFlowParams(dim, cfg.hidden, m.seed, mean, std);
  });
  const model = new StackedFlows(params, dim, cfg.hidden);
  const vars = model.trainable;
  const adam = new MemberAdam(vars, cfg.lr);
  const cursors: Cursor[] = members.map((m) => {
    const rng = new Rng(m.seed).fork(1); // trainClassFlow's data-order stream
    return {
      rows: m.features.rows,
      batches: Math.ceil(m.features.rows / B),
      rng,
      epochStart: rng.state,
      order: null,
      epoch: 0,
      batch: 0,
      sum: 0,
      losses: [],
    };
  });
  const perEpoch = Math.max(...cursors.map((c) => c.batches));
  // The run is the config (epochs left out, so a finished run can be extended), the members'
  // seeds and features: another grouping of the same classes is another run.
  const { epochs: _epochs, ...shape } = cfg;
  const fingerprint = canonicalJson({
    run: 'flow-group',
    v: 1,
    cfg: shape,
    cols: dim,
    members: members.map((m) => ({
      seed: m.seed,
      rows: m.features.rows,
      features: sha256Hex(new Uint8Array(m.features.data.buffer, m.features.data.byteOffset, m.features.data.byteLength)),
    })),
  });

  let step = 0;
  let groupLosses: number[] = [];
  let resumedFromEpoch = 0;
  try {
    if (hooks.checkpointDir) {
      const ckpt = await loadCheckpoint(hooks.checkpointDir, fingerprint);
      if (ckpt) {
        try {
          const saved = ckpt.extra as SavedGroup | undefined;
          if (saved?.format !== 'flow-group@1' || saved.members.length !== g) throw new Error('no flow-group state');
          if (ckpt.weights.length !== vars.length || ckpt.optimizer.slots.length !== 2 * vars.length)
            throw new Error(`${ckpt.weights.length} weights and ${ckpt.optimizer.slots.length} slots for ${vars.length} variables`);
          vars.forEach((v, i) => v.assign(ckpt.weights[i]));
          ckpt.optimizer.slots.forEach((t, i) => (i < vars.length ? adam.m[i] : adam.v[i - vars.length]).assign(t));
          saved.members.forEach((s, i) => {
            const c = cursors[i];
            c.rng = Rng.fromState(s.rngState);
            c.epochStart = s.rngState;
            // Mid-epoch: draw the epoch's permutation again from the state it was drawn from.
            c.order = s.batch > 0 ? c.rng.permutation(c.rows) : null;
            Object.assign(c, { epoch: s.epoch, batch: s.batch, sum: s.sum, losses: s.losses.slice() });
          });
          step = saved.step;
        } catch (err) {
          throw new Error(`flow group: checkpoint in ${hooks.checkpointDir} does not fit the model: ${(err as Error).message}`);
        } finally {
          tf.dispose([...ckpt.weights, ...ckpt.optimizer.slots]);
        }
        groupLosses = ckpt.losses.slice();
        resumedFromEpoch = ckpt.epoch;
        log(`flow group: resumed from epoch ${resumedFromEpoch} (${hooks.checkpointDir})`);
      }
    }

    const x = new Float32Array(g * B * dim);
    const weight = new Float32Array(g * B);
    let epochSum = 0;
    let epochCount = 0;
    for (; cursors.some((c) => c.epoch < cfg.epochs); step++) {
      const inEpoch = (step % perEpoch) + 1;
      throwIfAborted(hooks.signal, `flow group epoch ${Math.floor(step / perEpoch) + 1} batch ${inEpoch}/${perEpoch}`);
      // Each active member's batch, as its own loop would take it; padding rows weigh 0.
      x.fill(0);
      weight.fill(0);
      const steps = cursors.map((c, i) => {
        if (c.epoch >= cfg.epochs) return 0;
        if (c.batch === 0) {
          c.epochStart = c.rng.state;
          c.order = c.rng.permutation(c.rows);
        }
        const order = c.order as Int32Array;
        const from = c.batch * B;
        const n = Math.min(B, c.rows - from);
        const data = members[i].features.data;
        for (let r = 0; r < n; r++) {
          const row = order[from + r];
          x.set(data.subarray(row * dim, (row + 1) * dim), (i * B + r) * dim);
          weight[i * B + r] = 1 / n;
        }
        return c.epoch * c.batches + c.batch + 1;
      });
      const losses = await groupStep(model, adam, x, weight, g, B, dim, steps);
      cursors.forEach((c, i) => {
        if (steps[i] === 0) return;
        const loss = losses[i];
        if (!Number.isFinite(loss))
          throw new Error(`flow group: member ${i}: loss is ${loss} at epoch ${c.epoch + 1} batch ${c.batch + 1}`);
        c.sum += loss;
        epochSum += loss;
        epochCount++;
        if (++c.batch === c.batches) {
          c.losses.push(c.sum / c.batches);
          Object.assign(c, { epoch: c.epoch + 1, batch: 0, sum: 0, order: null });
        }
      });
      await hooks.onBatch?.(inEpoch, perEpoch);
      await yieldToEventLoop();
      if ((step + 1) % perEpoch !== 0) continue;
      // A group epoch is done.
      const done = (step + 1) / perEpoch;
      const loss = epochSum / Math.max(1, epochCount);
      groupLosses.push(loss);
      epochSum = 0;
      epochCount = 0;
      let checkpoint: string | undefined;
      if (hooks.checkpointDir && (done % every === 0 || done === cfg.epochs)) {
        const extra: SavedGroup = {
          format: 'flow-group@1',
          step: step + 1,
          members: cursors.map((c) => ({
            rngState: c.batch > 0 ? c.epochStart : c.rng.state,
            epoch: c.epoch,
            batch: c.batch,
            sum: c.sum,
            losses: c.losses,
          })),
        };
        checkpoint = await saveCheckpoint(hooks.checkpointDir, {
          fingerprint,
          epoch: done,
          rngState: 0, // per member, in `extra`
          losses: groupLosses,
          weights: vars,
          optimizer: { kind: 'adam', step: step + 1, slots: [...adam.m, ...adam.v] },
          extra,
        });
      }
      log(`flow group of ${g}: epoch ${done}/${cfg.epochs} loss ${loss.toFixed(4)}`);
      await hooks.onEpoch?.({ epoch: done, epochs: cfg.epochs, loss, checkpoint, resumedFromEpoch, lr: cfg.lr });
    }

    const all = {} as Record<TrainableName, Float32Array>;
    for (const name of TRAINABLE_NAMES) all[name] = (await model.vars[name].data()) as Float32Array;
    const flows: ClassFlow[] = [];
    for (let i = 0; i < g; i++) flows.push(ClassFlow.fromJSON(model.memberParams(all, i)));
    return { flows, nll: cursors.map((c) => c.losses), resumedFromEpoch };
  } finally {
    adam.dispose();
    model.dispose();
  }
}

/**
 * Splits classes 0..count-1 into groups of at most `size` consecutive classes (the last may be
 * smaller): the unit of one group activity. Consecutive, so a group is named by its range.
 */
export function classGroups(count: number, size: number): number[][] {
  if (!Number.isInteger(size) || size < 1) throw new Error(`classGroups: group size must be a positive integer, got ${size}`);
  const out: number[][] = [];
  for (let start = 0; start < count; start += size) out.push(Array.from({ length: Math.min(size, count - start) }, (_, i) => start + i));
  return out;
}
