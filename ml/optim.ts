// The two optimisers the paper uses (Adam for SimCLR and the flows, SGD with momentum for
// the classifier), written out instead of taken from tf.train: their whole state is a list
// of tensors plus a step count, in the order of the variables they update, so a checkpoint
// restores them exactly. (tf.train.adam rebuilds its bias-correction powers with pow() on
// restore, so a resumed run drifts from an uninterrupted one in the last bits.)
import * as tf from '@tensorflow/tfjs-core';

/** Everything an optimiser needs to continue: steps taken and one or more slots per variable. */
export interface OptimizerState {
  kind: 'adam' | 'sgd-momentum';
  step: number;
  /** Slot tensors in a fixed order (see each optimiser). */
  slots: tf.Tensor[];
}

export interface Optimizer {
  readonly kind: OptimizerState['kind'];
  /** Current learning rate; schedules set it between steps. */
  lr: number;
  /** Applies one update; `grads[i]` is the gradient of `vars[i]`. */
  step(grads: readonly tf.Tensor[]): void;
  /** The state, as tensors owned by the optimiser (do not dispose). */
  state(): OptimizerState;
  /** Replaces the state with copies of the given tensors. */
  load(s: OptimizerState): void;
  dispose(): void;
}

function zeroSlots(vars: readonly tf.Variable[]): tf.Variable[] {
  return vars.map((v) => {
    const zeros = tf.zerosLike(v);
    const slot = tf.variable(zeros, false);
    zeros.dispose(); // the variable holds its own reference to the data; this tensor would leak
    return slot;
  });
}

function checkState(kind: OptimizerState['kind'], s: OptimizerState, expected: readonly tf.Variable[]): void {
  if (s.kind !== kind) throw new Error(`optimizer: state is for '${s.kind}', not '${kind}'`);
  if (s.slots.length !== expected.length) {
    throw new Error(`optimizer: state has ${s.slots.length} slots, the model needs ${expected.length}`);
  }
  s.slots.forEach((t, i) => {
    if (!tf.util.arraysEqual(t.shape, expected[i].shape)) {
      throw new Error(`optimizer: slot ${i} has shape [${t.shape}], expected [${expected[i].shape}]`);
    }
  });
}

/** Adam (Kingma & Ba) with bias correction computed from the step count in float64. */
export class Adam implements Optimizer {
  readonly kind = 'adam' as const;
  private t = 0;
  private readonly m: tf.Variable[];
  private readonly v: tf.Variable[];

  constructor(
    private readonly vars: readonly tf.Variable[],
    public lr: number,
    private readonly beta1 = 0.9,
    private readonly beta2 = 0.999,
    private readonly epsilon = 1e-8,
  ) {
    this.m = zeroSlots(vars);
    this.v = zeroSlots(vars);
  }

  step(grads: readonly tf.Tensor[]): void {
    if (grads.length !== this.vars.length) throw new Error(`adam: ${grads.length} gradients for ${this.vars.length} variables`);
    this.t += 1;
    const c1 = 1 - this.beta1 ** this.t;
    const c2 = 1 - this.beta2 ** this.t;
    tf.tidy(() => {
      this.vars.forEach((w, i) => {
        const g = grads[i];
        const m = tf.add(tf.mul(this.m[i], this.beta1), tf.mul(g, 1 - this.beta1));
        const v = tf.add(tf.mul(this.v[i], this.beta2), tf.mul(tf.square(g), 1 - this.beta2));
        this.m[i].assign(m);
        this.v[i].assign(v);
        const update = tf.div(tf.div(m, c1), tf.add(tf.sqrt(tf.div(v, c2)), this.epsilon));
        w.assign(tf.sub(w, tf.mul(update, this.lr)));
      });
    });
  }

  /** Slots: all first moments, then all second moments. */
  state(): OptimizerState {
    return { kind: this.kind, step: this.t, slots: [...this.m, ...this.v] };
  }

  load(s: OptimizerState): void {
    checkState(this.kind, s, [...this.vars, ...this.vars]);
    this.t = s.step;
    const n = this.vars.length;
    s.slots.forEach((t, i) => (i < n ? this.m[i] : this.v[i - n]).assign(t));
  }

  dispose(): void {
    tf.dispose([...this.m, ...this.v]);
  }
}

/**
 * SGD with momentum as PyTorch defines it (buf = mu * buf + g; w -= lr * buf) and weight
 * decay coupled as an L2 term: g = grad + weightDecay * w, applied to every trainable weight
 * (PyTorch's default, which the paper's 5e-4 refers to).
 */
export class SgdMomentum implements Optimizer {
  readonly kind = 'sgd-momentum' as const;
  private t = 0;
  private readonly buf: tf.Variable[];

  constructor(
    private readonly vars: readonly tf.Variable[],
    public lr: number,
    private readonly momentum: number,
    private readonly weightDecay: number,
  ) {
    this.buf = zeroSlots(vars);
  }

  step(grads: readonly tf.Tensor[]): void {
    if (grads.length !== this.vars.length) throw new Error(`sgd: ${grads.length} gradients for ${this.vars.length} variables`);
    this.t += 1;
    tf.tidy(() => {
      this.vars.forEach((w, i) => {
        const g = this.weightDecay ? tf.add(grads[i], tf.mul(w, this.weightDecay)) : grads[i];
        // PyTorch starts the buffer at the first gradient; with a zero buffer mu * 0 + g is the same.
        const b = tf.add(tf.mul(this.buf[i], this.momentum), g);
        this.buf[i].assign(b);
        w.assign(tf.sub(w, tf.mul(b, this.lr)));
      });
    });
  }

  /** Slots: the momentum buffers. */
  state(): OptimizerState {
    return { kind: this.kind, step: this.t, slots: [...this.buf] };
  }

  load(s: OptimizerState): void {
    checkState(this.kind, s, this.vars);
    this.t = s.step;
    s.slots.forEach((t, i) => this.buf[i].assign(t));
  }

  dispose(): void {
    tf.dispose(this.buf);
  }
}
