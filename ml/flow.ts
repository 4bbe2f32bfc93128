// Per-class normalizing flow (method.md step 4): a RealNVP with exactly two affine coupling
// modules, the first transforming the second half of the features conditioned on the first,
// the second transforming the first half conditioned on the (already transformed) second.
// Each coupling's network is affine -> ReLU -> affine and outputs a log-scale and a shift.
//
// Decisions the paper leaves open:
// - Standardisation. Features are standardised per dimension with the class's own mean and
//   standard deviation, fixed from its training data, and the log-determinant of that affine
//   map is part of the flow's log-det. So every flow is a proper density over the RAW feature
//   space and log p_y(z) is comparable across classes (a standardisation without its log-det
//   would not be), while the couplings see unit-scale inputs whatever the feature scale.
//   A per-dimension std is floored at 1e-3 of the mean std so that a constant dimension does
//   not give an unbounded log-det.
// - Scale stability. The raw log-scale r of a coupling is bounded softly: s = B * tanh(r / B)
//   with B = SCALE_BOUND = 3 (scale factors within e^±3), which is ~identity for small r and
//   keeps far-away (foreign) points from producing infinite log-dets.
// - Initialisation. The second affine of each network starts at zero, so an untrained flow is
//   the identity after standardisation: a diagonal Gaussian fitted to the class.
import * as tf from '@tensorflow/tfjs-core';
// tfjs-core's Node bundle registers no gradient functions; tfjs-layers' bundle registers them all.
import '@tensorflow/tfjs-layers';
import { readFile } from 'node:fs/promises';
import type { FlowConfig } from './config.js';
import { gradientStep, runEpochs, type TrainHooks } from './loop.js';
import { featureMoments, selectRows, type Matrix } from './matrix.js';
import { Adam } from './optim.js';
import { Rng } from './random.js';
import { writeFileAtomic } from '../data/files.js';
import { canonicalJson, sha256Hex } from '../data/hash.js';

/** Bound on each coupling's log-scale (see the header). */
export const SCALE_BOUND = 3;
export const LOG_2PI = Math.log(2 * Math.PI);

/** A flow as plain data: what is saved and sent between processes. */
export interface FlowParams {
  dim: number;
  hidden: number;
  /** Named parameter arrays (see `PARAM_NAMES`); each is row-major. */
  weights: Record<string, Float32Array>;
}

/** The parameters of one flow: the fixed standardisation, then two couplings. */
const PARAM_NAMES = ['mean', 'std', 'c1.w1', 'c1.b1', 'c1.w2', 'c1.b2', 'c2.w1', 'c2.b1', 'c2.w2', 'c2.b2'] as const;
type ParamName = (typeof PARAM_NAMES)[number];
/** The trainable parameters, in the order of `ClassFlow.trainable` (and of optimizer state). */
export const TRAINABLE_NAMES = ['c1.w1', 'c1.b1', 'c1.w2', 'c1.b2', 'c2.w1', 'c2.b1', 'c2.w2', 'c2.b2'] as const;

export function paramShapes(dim: number, hidden: number): Record<ParamName, number[]> {
  const d1 = Math.floor(dim / 2);
  const d2 = dim - d1;
  return {
    mean: [dim],
    std: [dim],
    // Coupling 1: conditioned on the first d1 dims, transforms the last d2 (log-scale and shift).
    'c1.w1': [d1, hidden],
    'c1.b1': [hidden],
    'c1.w2': [hidden, 2 * d2],
    'c1.b2': [2 * d2],
    // Coupling 2: conditioned on the last d2 dims, transforms the first d1.
    'c2.w1': [d2, hidden],
    'c2.b1': [hidden],
    'c2.w2': [hidden, 2 * d1],
    'c2.b2': [2 * d1],
  };
}

/** The parameters of a fresh flow (see `ClassFlow.create`): the same for the same seed, whoever trains it. */
export function initialFlowParams(dim: number, hidden: number, seed: number, mean?: Float32Array, std?: Float32Array): FlowParams {
  if (!Number.isInteger(dim) || dim < 2) throw new Error(`ClassFlow: dim must be an integer >= 2, got ${dim}`);
  if (!Number.isInteger(hidden) || hidden < 1) throw new Error(`ClassFlow: hidden must be a positive integer, got ${hidden}`);
  const rng = new Rng(seed);
  const shapes = paramShapes(dim, hidden);
  const weights = {} as Record<ParamName, Float32Array>;
  for (const name of PARAM_NAMES) {
    const shape = shapes[name];
    const a = new Float32Array(shape.reduce((x, y) => x * y, 1));
    if (name.endsWith('.w1')) {
      const bound = Math.sqrt(6 / shape[0]);
      for (let i = 0; i < a.length; i++) a[i] = rng.uniform(-bound, bound);
    }
    weights[name] = a;
  }
  weights.mean = mean ? Float32Array.from(mean) : new Float32Array(dim);
  weights.std = std ? Float32Array.from(std) : new Float32Array(dim).fill(1);
  return { dim, hidden, weights };
}

interface Coupling {
  w1: tf.Variable;
  b1: tf.Variable;
  w2: tf.Variable;
  b2: tf.Variable;
}

export class ClassFlow {
  readonly dim: number;
  readonly hidden: number;
  private readonly d1: number;
  private readonly mean: tf.Tensor1D;
  private readonly invStd: tf.Tensor1D;
  private readonly std: Float32Array;
  /** -sum(log std): the standardisation's log-det, a constant per flow. */
  private readonly standardiseLogDet: number;
  private readonly c1: Coupling;
  private readonly c2: Coupling;
  private disposed = false;

  private constructor(p: FlowParams) {
    validateParams(p, 'flow parameters');
    this.dim = p.dim;
    this.hidden = p.hidden;
    this.d1 = Math.floor(p.dim / 2);
    const shapes = paramShapes(p.dim, p.hidden);
    this.std = Float32Array.from(p.weights.std);
    this.mean = tf.tensor1d(p.weights.mean);
    this.invStd = tf.tensor1d(this.std.map((s) => 1 / s));
    this.standardiseLogDet = -this.std.reduce((acc, s) => acc + Math.log(s), 0);
    const v = (name: ParamName) => {
      const init = tf.tensor(p.weights[name], shapes[name]);
      const variable = tf.variable(init, true, undefined, 'float32');
      init.dispose(); // the variable holds its own reference to the data
      return variable;
    };
    this.c1 = { w1: v('c1.w1'), b1: v('c1.b1'), w2: v('c1.w2'), b2: v('c1.b2') };
    this.c2 = { w1: v('c2.w1'), b1: v('c2.b1'), w2: v('c2.w2'), b2: v('c2.b2') };
  }

  /**
   * A fresh flow: identity couplings (zero second affine), He-uniform first affine, unit
   * standardisation. `trainClassFlow` replaces the standardisation with the class's statistics.
   */
  static create(dim: number, hidden: number, seed: number, mean?: Float32Array, std?: Float32Array): ClassFlow {
    return new ClassFlow(initialFlowParams(dim, hidden, seed, mean, std));
  }

  /** The trainable variables, in a fixed order (optimizer state follows this order). */
  get trainable(): tf.Variable[] {
    return [this.c1.w1, this.c1.b1, this.c1.w2, this.c1.b2, this.c2.w1, this.c2.b1, this.c2.w2, this.c2.b2];
  }

  /** Log-scale and shift of one coupling for conditioning input `cond` (rows x k). */
  private net(c: Coupling, cond: tf.Tensor2D): { s: tf.Tensor2D; t: tf.Tensor2D } {
    // Plain products: the backward pass's transposed products are made fast on wasm by
    // backend/wasm-kernels.ts (registered by selectBackend).
    const h = tf.relu(tf.add(tf.matMul(cond, c.w1), c.b1));
    const out = tf.add(tf.matMul(h, c.w2), c.b2) as tf.Tensor2D;
    const k = out.shape[1] / 2;
    const raw = tf.slice(out, [0, 0], [-1, k]);
    const s = tf.mul(tf.tanh(tf.div(raw, SCALE_BOUND)), SCALE_BOUND) as tf.Tensor2D;
    return { s, t: tf.slice(out, [0, k], [-1, k]) };
  }

  /** Data -> base: z and log|det dz/dx| per row (standardisation included). */
  forward(x: tf.Tensor2D): { z: tf.Tensor2D; logDet: tf.Tensor1D } {
    this.assertLive();
    if (x.shape[1] !== this.dim) throw new Error(`ClassFlow.forward: expected ${this.dim} columns, got ${x.shape[1]}`);
    return tf.tidy(() => {
      const u = tf.mul(tf.sub(x, this.mean), this.invStd) as tf.Tensor2D;
      const a = tf.slice(u, [0, 0], [-1, this.d1]);
      const b = tf.slice(u, [0, this.d1], [-1, this.dim - this.d1]);
      const n1 = this.net(this.c1, a);
      const b2 = tf.add(tf.mul(b, tf.exp(n1.s)), n1.t) as tf.Tensor2D;
      const n2 = this.net(this.c2, b2);
      const a2 = tf.add(tf.mul(a, tf.exp(n2.s)), n2.t);
      const z = tf.concat([a2, b2], 1) as tf.Tensor2D;
      const logDet = tf.add(tf.add(tf.sum(n1.s, 1), tf.sum(n2.s, 1)), this.standardiseLogDet) as tf.Tensor1D;
      return { z, logDet };
    });
  }

  /** Base -> data. */
  inverse(z: tf.Tensor2D): tf.Tensor2D {
    this.assertLive();
    if (z.shape[1] !== this.dim) throw new Error(`ClassFlow.inverse: expected ${this.dim} columns, got ${z.shape[1]}`);
    return tf.tidy(() => {
      const a2 = tf.slice(z, [0, 0], [-1, this.d1]);
      const b2 = tf.slice(z, [0, this.d1], [-1, this.dim - this.d1]) as tf.Tensor2D;
      const n2 = this.net(this.c2, b2);
      const a = tf.mul(tf.sub(a2, n2.t), tf.exp(tf.neg(n2.s))) as tf.Tensor2D;
      const n1 = this.net(this.c1, a);
      const b = tf.mul(tf.sub(b2, n1.t), tf.exp(tf.neg(n1.s)));
      const u = tf.concat([a, b], 1);
      return tf.add(tf.div(u, this.invStd), this.mean) as tf.Tensor2D;
    });
  }

  /** log p(x) per row (nats), as a tensor; used by training. */
  logProbTensor(x: tf.Tensor2D): tf.Tensor1D {
    return tf.tidy(() => {
      const { z, logDet } = this.forward(x);
      const base = tf.sub(tf.mul(tf.sum(tf.square(z), 1), -0.5), 0.5 * this.dim * LOG_2PI);
      return tf.add(base, logDet) as tf.Tensor1D;
    });
  }

  /** log p(x) per row, nats, computed in batches of `batchSize` rows. */
  logProb(x: Matrix, batchSize = 1024): Float32Array {
    this.assertLive();
    if (x.cols !== this.dim) throw new Error(`ClassFlow.logProb: expected ${this.dim} columns, got ${x.cols}`);
    const out = new Float32Array(x.rows);
    for (let start = 0; start < x.rows; start += batchSize) {
      const n = Math.min(batchSize, x.rows - start);
      const lp = tf.tidy(() => {
        const xb = tf.tensor2d(x.data.subarray(start * x.cols, (start + n) * x.cols), [n, x.cols]);
        return this.logProbTensor(xb);
      });
      out.set(lp.dataSync() as Float32Array, start);
      lp.dispose();
    }
    return out;
  }

  toJSON(): FlowParams {
    this.assertLive();
    const weights: Record<string, Float32Array> = {
      mean: Float32Array.from(this.mean.dataSync() as Float32Array),
      std: Float32Array.from(this.std),
    };
    for (const [prefix, c] of [
      ['c1', this.c1],
      ['c2', this.c2],
    ] as const) {
      for (const k of ['w1', 'b1', 'w2', 'b2'] as const) weights[`${prefix}.${k}`] = Float32Array.from(c[k].dataSync() as Float32Array);
    }
    return { dim: this.dim, hidden: this.hidden, weights };
  }

  static fromJSON(p: FlowParams): ClassFlow {
    return new ClassFlow(p);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.mean.dispose();
    this.invStd.dispose();
    for (const v of this.trainable) v.dispose();
  }

  private assertLive(): void {
    if (this.disposed) throw new Error('ClassFlow: used after dispose()');
  }
}

function validateParams(p: FlowParams, where: string): void {
  if (!p || typeof p !== 'object') throw new Error(`${where}: not an object`);
  if (!Number.isInteger(p.dim) || p.dim < 2) throw new Error(`${where}: dim must be an integer >= 2, got ${String(p.dim)}`);
  if (!Number.isInteger(p.hidden) || p.hidden < 1) throw new Error(`${where}: hidden must be a positive integer, got ${String(p.hidden)}`);
  const shapes = paramShapes(p.dim, p.hidden);
  for (const name of PARAM_NAMES) {
    const w = p.weights?.[name];
    const n = shapes[name].reduce((x, y) => x * y, 1);
    if (!(w instanceof Float32Array)) throw new Error(`${where}: weight '${name}' missing or not a Float32Array`);
    if (w.length !== n) throw new Error(`${where}: weight '${name}' has ${w.length} values, expected ${n}`);
    for (let i = 0; i < w.length; i++)
      if (!Number.isFinite(w[i])) throw new Error(`${where}: weight '${name}' has a non-finite value at ${i}`);
  }
  for (let i = 0; i < p.dim; i++) if (!(p.weights.std[i] > 0)) throw new Error(`${where}: std[${i}] must be > 0`);
}

// ---- training ----

/** Paper: Adam betas (0.9, 0.99), as for SimCLR. */
export const FLOW_BETAS = [0.9, 0.99] as const;
/** tf.train.adam's default epsilon on float32 backends (backend.epsilon()), which the flows were trained with before. */
export const FLOW_EPSILON = 1e-7;

export function validateFlowConfig(cfg: FlowConfig): void {
  for (const k of ['epochs', 'batchSize', 'hidden'] as const) {
    if (!Number.isInteger(cfg[k]) || cfg[k] < (k === 'epochs' ? 0 : 1))
      throw new Error(`flow config: ${k} must be a positive integer, got ${cfg[k]}`);
  }
  if (!(cfg.lr > 0)) throw new Error(`flow config: lr must be > 0, got ${cfg.lr}`);
}

/** A class's training features: at least one row, two columns, every value finite. */
export function checkFlowFeatures(features: Matrix, where: string): void {
  if (features.rows < 1) throw new Error(`${where}: no samples`);
  if (features.cols < 2) throw new Error(`${where}: features need >= 2 columns, got ${features.cols}`);
  for (let i = 0; i < features.data.length; i++) {
    if (!Number.isFinite(features.data[i]))
      throw new Error(`${where}: feature ${i % features.cols} of row ${Math.floor(i / features.cols)} is ${features.data[i]}`);
  }
}

/**
 * Fits one class's flow by minimising the mean NLL of `features` (the class's rows only) with
 * Adam, through the shared epoch loop: seeded shuffling every epoch, every trailing batch
 * trained, cancellation at the next batch (AbortError), checkpoint and exact resume in
 * `hooks.checkpointDir`. `nll[e]` is epoch e's mean over its batches of the batch-mean NLL
 * (nats per sample) while training, as runEpochs reports it; it equals the per-sample mean
 * when the batch size divides the row count (otherwise the short last batch weighs as much
 * as a full one).
 */
export async function trainClassFlow(
  features: Matrix,
  cfg: FlowConfig,
  seed: number,
  hooks: TrainHooks = {},
): Promise<{ flow: ClassFlow; nll: number[]; resumedFromEpoch: number }> {
  validateFlowConfig(cfg);
  checkFlowFeatures(features, 'trainClassFlow');
  const { rows, cols: d, data } = features;
  const { mean, std } = featureMoments(features);
  const flow = ClassFlow.create(d, cfg.hidden, seed, mean, std);
  const vars = flow.trainable;
  const optimizer = new Adam(vars, cfg.lr, FLOW_BETAS[0], FLOW_BETAS[1], FLOW_EPSILON);
  // The run is the config (epochs left out, so a finished run can be extended), the seed and
  // the class's features themselves: same-shaped features of another class or encoder are
  // another run. The standardisation follows from the features, so it needs no checkpointing.
  const { epochs: _epochs, ...shape } = cfg;
  const fingerprint = canonicalJson({
    run: 'flow',
    v: 1,
    cfg: shape,
    seed,
    rows,
    cols: d,
    features: sha256Hex(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)),
  });
  try {
    const { losses, resumedFromEpoch } = await runEpochs({
      name: 'flow',
      epochs: cfg.epochs,
      pool: Int32Array.from({ length: rows }, (_, i) => i),
      batchSize: cfg.batchSize,
      minBatch: 1,
      rng: new Rng(seed).fork(1),
      fingerprint,
      // The flow's own variables, not copies: the checkpoint only reads them.
      getWeights: () => vars,
      setWeights: (ws) => {
        if (ws.length !== vars.length) throw new Error(`${ws.length} weights for ${vars.length} flow variables`);
        vars.forEach((v, i) => v.assign(ws[i]));
      },
      optimizer,
      hooks,
      step: (idx) => {
        const batch = new Float32Array(idx.length * d);
        idx.forEach((r, i) => batch.set(data.subarray(r * d, (r + 1) * d), i * d));
        const nll = () => tf.neg(tf.mean(flow.logProbTensor(tf.tensor2d(batch, [idx.length, d])))) as tf.Scalar;
        return gradientStep(nll, vars, optimizer);
      },
    });
    return { flow, nll: losses, resumedFromEpoch };
  } catch (err) {
    flow.dispose();
    throw err;
  } finally {
    optimizer.dispose();
  }
}

/** Indices of the samples labelled `y`. */
export function classMembers(labels: Int32Array, y: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < labels.length; i++) if (labels[i] === y) out.push(i);
  return out;
}

/** One flow per class, each trained on that class's features only (step 4). */
export async function perClassFlows(
  features: Matrix,
  labels: Int32Array,
  numClasses: number,
  cfg: FlowConfig,
  seed: number,
  hooks: { signal?: AbortSignal } = {},
): Promise<ClassFlow[]> {
  const flows: ClassFlow[] = [];
  try {
    for (let y = 0; y < numClasses; y++) {
      const rows = classMembers(labels, y);
      if (rows.length === 0) throw new Error(`class ${y} has no samples: a flow cannot be fitted`);
      flows.push((await trainClassFlow(selectRows(features, rows), cfg, seed + y, hooks)).flow);
    }
  } catch (err) {
    // The caller never sees the flows already fitted: free them.
    flows.forEach((f) => f.dispose());
    throw err;
  }
  return flows;
}

// ---- files ----

const FILE_FORMAT = 'backdoor-audit/class-flow@1';

interface FlowFile {
  format: string;
  dim: number;
  hidden: number;
  /** Little-endian float32 arrays, base64. */
  weights: Record<string, string>;
}

function toBase64(a: Float32Array): string {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
}

function fromBase64(s: string): Float32Array {
  const b = Buffer.from(s, 'base64');
  const out = new Float32Array(b.byteLength / 4);
  new Uint8Array(out.buffer).set(b.subarray(0, out.length * 4));
  return out;
}

/** Writes the flow as JSON, atomically (temp file + rename). */
export async function saveFlow(flow: ClassFlow, file: string): Promise<void> {
  const p = flow.toJSON();
  const body: FlowFile = { format: FILE_FORMAT, dim: p.dim, hidden: p.hidden, weights: {} };
  for (const [k, v] of Object.entries(p.weights)) body.weights[k] = toBase64(v);
  await writeFileAtomic(file, JSON.stringify(body));
}

export async function loadFlow(file: string): Promise<ClassFlow> {
  let body: FlowFile;
  try {
    body = JSON.parse(await readFile(file, 'utf8')) as FlowFile;
  } catch (err) {
    throw new Error(`loadFlow: cannot read ${file}: ${(err as Error).message}`);
  }
  if (body?.format !== FILE_FORMAT)
    throw new Error(`loadFlow: ${file} is not a class flow (format ${String(body?.format)}, expected ${FILE_FORMAT})`);
  if (!body.weights || typeof body.weights !== 'object') throw new Error(`loadFlow: ${file} has no weights`);
  const weights: Record<string, Float32Array> = {};
  for (const [k, v] of Object.entries(body.weights)) {
    if (typeof v !== 'string') throw new Error(`loadFlow: ${file}: weight '${k}' is not a base64 string`);
    weights[k] = fromBase64(v);
  }
  const p: FlowParams = { dim: body.dim, hidden: body.hidden, weights };
  validateParams(p, `loadFlow: ${file}`);
  return ClassFlow.fromJSON(p);
}

/** Mean NLL (nats per sample) of `flow` on `x`. */
export function meanNll(flow: ClassFlow, x: Matrix): number {
  const lp = flow.logProb(x);
  let s = 0;
  for (let i = 0; i < lp.length; i++) s -= lp[i];
  return s / Math.max(1, lp.length);
}
