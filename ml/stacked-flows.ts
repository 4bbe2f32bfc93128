// The batched model of ml/flow-group.ts: G classes' flows as stacked tensors, Adam over them
// with a step count per member, and one lockstep training step. Each piece computes what
// ml/flow.ts's ClassFlow and ml/optim.ts's Adam compute for one class, for all G at once.
import * as tf from '@tensorflow/tfjs-core';
// tfjs-core's Node bundle registers no gradient functions; tfjs-layers' bundle registers them all.
import '@tensorflow/tfjs-layers';
import { FLOW_BETAS, FLOW_EPSILON, LOG_2PI, paramShapes, SCALE_BOUND, TRAINABLE_NAMES, type FlowParams } from './flow.js';

export type TrainableName = (typeof TRAINABLE_NAMES)[number];

/** G flows as stacked tensors: every weight [G, rows, cols] (biases [G, 1, n]). */
export class StackedFlows {
  readonly vars: Record<TrainableName, tf.Variable>;
  private readonly mean: tf.Tensor3D;
  private readonly invStd: tf.Tensor3D;
  /** -sum(log std) per member, [G, 1]. */
  private readonly logDet0: tf.Tensor2D;
  readonly d1: number;

  constructor(
    private readonly params: readonly FlowParams[],
    readonly dim: number,
    readonly hidden: number,
  ) {
    const g = params.length;
    this.d1 = Math.floor(dim / 2);
    const shapes = paramShapes(dim, hidden);
    // Row-major [G, ...] is the members' arrays one after the other.
    const stack = (name: string) => {
      const n = params[0].weights[name].length;
      const out = new Float32Array(g * n);
      params.forEach((p, i) => out.set(p.weights[name], i * n));
      return out;
    };
    const vars = {} as Record<TrainableName, tf.Variable>;
    for (const name of TRAINABLE_NAMES) {
      const s = shapes[name];
      const shape: [number, number, number] = s.length === 2 ? [g, s[0], s[1]] : [g, 1, s[0]];
      const init = tf.tensor3d(stack(name), shape);
      vars[name] = tf.variable(init, true, undefined, 'float32');
      init.dispose();
    }
    this.vars = vars;
    this.mean = tf.tensor3d(stack('mean'), [g, 1, dim]);
    this.invStd = tf.tensor3d(
      stack('std').map((s) => 1 / s),
      [g, 1, dim],
    );
    this.logDet0 = tf.tensor2d(
      params.map((p) => -p.weights.std.reduce((acc, s) => acc + Math.log(s), 0)),
      [g, 1],
    );
  }

  get trainable(): tf.Variable[] {
    return TRAINABLE_NAMES.map((n) => this.vars[n]);
  }

  /** ClassFlow.net, batched over members: x [G, B, k] -> log-scale and shift. */
  private net(prefix: 'c1' | 'c2', cond: tf.Tensor3D): { s: tf.Tensor3D; t: tf.Tensor3D } {
    const v = this.vars;
    const h = tf.relu(tf.add(tf.matMul(cond, v[`${prefix}.w1`]), v[`${prefix}.b1`])) as tf.Tensor3D;
    const out = tf.add(tf.matMul(h, v[`${prefix}.w2`]), v[`${prefix}.b2`]) as tf.Tensor3D;
    const k = out.shape[2] / 2;
    const raw = tf.slice(out, [0, 0, 0], [-1, -1, k]);
    const s = tf.mul(tf.tanh(tf.div(raw, SCALE_BOUND)), SCALE_BOUND) as tf.Tensor3D;
    return { s, t: tf.slice(out, [0, 0, k], [-1, -1, k]) };
  }

  /** log p_g(x[g, i]) for every member g and row i: x [G, B, dim] -> [G, B]. Same map as ClassFlow.logProbTensor. */
  logProb(x: tf.Tensor3D): tf.Tensor2D {
    const u = tf.mul(tf.sub(x, this.mean), this.invStd) as tf.Tensor3D;
    const a = tf.slice(u, [0, 0, 0], [-1, -1, this.d1]);
    const b = tf.slice(u, [0, 0, this.d1], [-1, -1, this.dim - this.d1]);
    const n1 = this.net('c1', a);
    const b2 = tf.add(tf.mul(b, tf.exp(n1.s)), n1.t) as tf.Tensor3D;
    const n2 = this.net('c2', b2);
    const a2 = tf.add(tf.mul(a, tf.exp(n2.s)), n2.t);
    const z = tf.concat([a2, b2], 2);
    const base = tf.sub(tf.mul(tf.sum(tf.square(z), 2), -0.5), 0.5 * this.dim * LOG_2PI);
    const logDet = tf.add(tf.add(tf.sum(n1.s, 2), tf.sum(n2.s, 2)), this.logDet0);
    return tf.add(base, logDet) as tf.Tensor2D;
  }

  /** Member g's flow as plain parameters (its standardisation unchanged). */
  memberParams(all: Record<TrainableName, Float32Array>, g: number): FlowParams {
    const p = this.params[g];
    const weights: Record<string, Float32Array> = { mean: Float32Array.from(p.weights.mean), std: Float32Array.from(p.weights.std) };
    for (const name of TRAINABLE_NAMES) {
      const n = p.weights[name].length;
      weights[name] = all[name].slice(g * n, (g + 1) * n);
    }
    return { dim: this.dim, hidden: this.hidden, weights };
  }

  dispose(): void {
    tf.dispose([this.mean, this.invStd, this.logDet0, ...this.trainable]);
  }
}

/**
 * Adam over stacked members, each with its own step count: the update of `ml/optim.ts`'s Adam
 * applied to every member at once, and none at all (weights and moments kept) to a member
 * that takes no step.
 */
export class MemberAdam {
  readonly m: tf.Variable[];
  readonly v: tf.Variable[];

  constructor(
    private readonly vars: readonly tf.Variable[],
    readonly lr: number,
  ) {
    const zeros = () =>
      vars.map((w) => {
        const z = tf.zerosLike(w);
        const slot = tf.variable(z, false);
        z.dispose();
        return slot;
      });
    this.m = zeros();
    this.v = zeros();
  }

  /** `steps[g]`: member g's step count after this step (bias correction), or 0 when it takes none. */
  step(grads: readonly tf.Tensor[], steps: readonly number[]): void {
    const [beta1, beta2] = FLOW_BETAS;
    const g = steps.length;
    const all = steps.every((t) => t > 0);
    // Members in lockstep share their step count (only a resumed run with more epochs mixes
    // them): then the bias corrections are plain scalars, as in the single-class Adam, and
    // TensorFlow takes its fast scalar path instead of a broadcast over [G, 1, 1].
    const taken = steps.filter((t) => t > 0);
    const shared = taken.every((t) => t === taken[0]) ? taken[0] : undefined;
    tf.tidy(() => {
      // Bias corrections in float64, then float32: what the single-class Adam's scalars become.
      const correction = (beta: number): number | tf.Tensor =>
        shared !== undefined
          ? 1 - beta ** shared
          : tf.tensor3d(
              steps.map((t) => (t > 0 ? 1 - beta ** t : 1)),
              [g, 1, 1],
            );
      const c1 = correction(beta1);
      const c2 = correction(beta2);
      const on = all
        ? undefined
        : tf.tensor3d(
            steps.map((t) => (t > 0 ? 1 : 0)),
            [g, 1, 1],
            'bool',
          );
      const keep = (next: tf.Tensor, prev: tf.Tensor) => (on ? tf.where(on, next, prev) : next);
      this.vars.forEach((w, i) => {
        const grad = grads[i];
        const m = tf.add(tf.mul(this.m[i], beta1), tf.mul(grad, 1 - beta1));
        const v = tf.add(tf.mul(this.v[i], beta2), tf.mul(tf.square(grad), 1 - beta2));
        const update = tf.div(tf.div(m, c1), tf.add(tf.sqrt(tf.div(v, c2)), FLOW_EPSILON));
        const next = tf.sub(w, tf.mul(update, this.lr));
        this.m[i].assign(keep(m, this.m[i]));
        this.v[i].assign(keep(v, this.v[i]));
        w.assign(keep(next, w));
      });
    });
  }

  dispose(): void {
    tf.dispose([...this.m, ...this.v]);
  }
}

/** One lockstep step: every member's batch-mean NLL, its gradients, the members' Adam updates. */
export async function groupStep(
  model: StackedFlows,
  adam: MemberAdam,
  x: Float32Array,
  weight: Float32Array,
  g: number,
  batch: number,
  dim: number,
  steps: readonly number[],
): Promise<Float32Array> {
  const vars = model.trainable;
  let perMember: tf.Tensor | undefined;
  tf.tidy(() => {
    const xb = tf.tensor3d(x, [g, batch, dim]);
    const w = tf.tensor2d(weight, [g, batch]);
    // The sum of the members' losses: member g's weights get member g's gradient only.
    const { grads } = tf.variableGrads(() => {
      const nll = tf.neg(tf.sum(tf.mul(model.logProb(xb), w), 1));
      perMember = tf.keep(nll);
      return tf.sum(nll) as tf.Scalar;
    }, vars);
    adam.step(
      vars.map((v) => grads[v.name] ?? tf.zerosLike(v)),
      steps,
    );
  });
  const t = perMember as unknown as tf.Tensor;
  const out = (await t.data()) as Float32Array;
  t.dispose();
  return out;
}
