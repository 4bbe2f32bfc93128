// The child-process side of `npm run bench -- speed` (bench/speed.ts): one measurement of our
// stack in a fresh process (a fresh wasm heap, no backend left over), reported as one
// `RESULT {json}` line on stdout: a SimCLR training step and inference, or the per-class flows
// and the density matrix.
import * as tf from '@tensorflow/tfjs-core';
import { selectBackend, type BackendName } from '../../backend/backend.js';
import { defaultAuditConfig } from '../../ml/config.js';
import { densityMatrix } from '../../ml/density.js';
import { trainClassFlow, type ClassFlow } from '../../ml/flow.js';
import { classGroups, trainFlowGroup } from '../../ml/flow-group.js';
import { matrix, selectRows } from '../../ml/matrix.js';
import { Rng } from '../../ml/random.js';
import { simclrAugment } from '../../ml/augment.js';
import { simclrBenchStep } from './simclr-step.js';
import { timed } from './timed.js';

export interface SimclrTask {
  kind: 'simclr';
  backend: BackendName;
  width: number;
  batch: number;
  steps: number;
  inferBatches: number;
}

export interface FlowTask {
  kind: 'flows';
  backend: BackendName;
  classes: number;
  perClass: number;
  dim: number;
  hidden: number;
  epochs: number;
  /** Only the first `trainClasses` flows are trained; the density matrix uses all (same cost). */
  trainClasses: number;
  /**
   * Classes trained in lockstep (ml/flow-group.ts), as the pipeline's flow stage does; absent:
   * one class at a time (ml/flow.ts trainClassFlow), the per-class trainer it replaced.
   */
  groupSize?: number;
}

export type Task = SimclrTask | FlowTask;

export interface SimclrResult {
  stepS: number;
  stepCpuS: number;
  augmentS: number;
  inferS: number;
  inferCpuS: number;
  loss: number;
}

export interface FlowResult {
  trainS: number;
  trainCpuS: number;
  densityS: number;
  densityCpuS: number;
  finite: boolean;
}

async function runSimclr(t: SimclrTask): Promise<SimclrResult> {
  const { step, encoder, pixels } = simclrBenchStep(t.width, t.batch);
  await step(); // warm-up: kernel setup, XNNPACK operator creation, heap growth
  const train = await timed(async () => {
    let loss = 0;
    for (let i = 0; i < t.steps; i++) loss = await step();
    return loss;
  });

  const images = tf.tensor4d(pixels(t.batch), [t.batch, 32, 32, 3]);
  const augment = await timed(() => {
    const augRng = new Rng(1);
    const [a, b] = [simclrAugment(images, augRng), simclrAugment(images, augRng)];
    a.dataSync();
    b.dataSync();
    tf.dispose([a, b]);
  });
  const infer1 = () => {
    const f = tf.tidy(() => encoder.predict(images, { batchSize: t.batch }) as tf.Tensor);
    f.dataSync();
    f.dispose();
  };
  infer1();
  const infer = await timed(() => {
    for (let i = 0; i < t.inferBatches; i++) infer1();
  });
  images.dispose();
  return {
    stepS: train.s / t.steps,
    stepCpuS: train.cpuS / t.steps,
    augmentS: augment.s,
    inferS: infer.s / t.inferBatches,
    inferCpuS: infer.cpuS / t.inferBatches,
    loss: train.value,
  };
}

async function runFlows(t: FlowTask): Promise<FlowResult> {
  // Class-conditional Gaussians: each class a random centre plus unit noise.
  const rng = new Rng(0);
  const n = t.classes * t.perClass;
  const features = matrix(n, t.dim);
  const centres = Float32Array.from({ length: t.classes * t.dim }, () => rng.normal());
  for (let i = 0; i < n; i++) {
    const c = Math.floor(i / t.perClass);
    for (let j = 0; j < t.dim; j++) features.data[i * t.dim + j] = centres[c * t.dim + j]! + rng.normal();
  }
  const cfg = { ...defaultAuditConfig.flow, hidden: t.hidden, epochs: t.epochs };
  const flows: ClassFlow[] = [];
  const classRows = (c: number) =>
    selectRows(
      features,
      Int32Array.from({ length: t.perClass }, (_, i) => c * t.perClass + i),
    );
  const train = await timed(async () => {
    if (t.groupSize) {
      // A group's time is not linear in its size: every class trains (trainClasses is ignored).
      for (const group of classGroups(t.classes, t.groupSize)) {
        flows.push(
          ...(
            await trainFlowGroup(
              group.map((c) => ({ features: classRows(c), seed: c })),
              cfg,
            )
          ).flows,
        );
      }
      return;
    }
    for (let c = 0; c < t.classes; c++) {
      const classCfg = c < t.trainClasses ? cfg : { ...cfg, epochs: 0 };
      flows.push((await trainClassFlow(classRows(c), classCfg, c)).flow);
    }
  });
  const density = await timed(() => densityMatrix(flows, features));
  flows.forEach((f) => f.dispose());
  return {
    trainS: train.s,
    trainCpuS: train.cpuS,
    densityS: density.s,
    densityCpuS: density.cpuS,
    finite: density.value.data.every((v) => Number.isFinite(v)),
  };
}

export async function worker(task: Task): Promise<void> {
  const info = await selectBackend(task.backend, 'training', () => {});
  const result = task.kind === 'simclr' ? await runSimclr(task) : await runFlows(task);
  process.stdout.write(`\nRESULT ${JSON.stringify({ backend: info.name, ...result })}\n`);
}
