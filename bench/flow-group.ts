// Per-class flows trained one class at a time (ml/flow.ts trainClassFlow, what the `flow` stage
// did per class) against the same flows trained in lockstep (ml/flow-group.ts), in one process,
// interleaved, on synthetic class-conditional Gaussians; then the density matrix of the flows.
// Also counts the kernels one step runs (tf.profile), which is where the per-class time goes.
//
//   npm run bench -- flow-group [--backend tensorflow] [--classes 10] [--per-class 300] [--dim 64]
//                               [--hidden 64] [--batch 16] [--epochs 1] [--group 10] [--rounds 2] [--json out.json]
//
// Writes bench/results/flow-group-<date>.json. Threads as in bench/speed.ts (TF_NUM_INTRAOP_THREADS,
// default 2, set before the native backend loads).
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { selectBackend, type BackendName } from '../backend/backend.js';
import { densityMatrix } from '../ml/density.js';
import { trainClassFlow, type ClassFlow } from '../ml/flow.js';
import { classGroups, trainFlowGroup } from '../ml/flow-group.js';
import { matrix, type Matrix } from '../ml/matrix.js';
import { Rng } from '../ml/random.js';
import { repoRoot } from '../data/paths.js';
import { nativeThreadEnv } from './lib/processes.js';
import { timed } from './lib/timed.js';

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    backend: { type: 'string', default: 'tensorflow' },
    classes: { type: 'string', default: '10' },
    'per-class': { type: 'string', default: '300' },
    dim: { type: 'string', default: '64' },
    hidden: { type: 'string', default: '64' },
    batch: { type: 'string', default: '16' },
    epochs: { type: 'string', default: '1' },
    group: { type: 'string' },
    rounds: { type: 'string', default: '2' },
    threads: { type: 'string', default: '2' },
    json: { type: 'string' },
  },
});
const int = (s: string | undefined, what: string): number => {
  const v = Number(s);
  if (!Number.isInteger(v) || v < 1) throw new Error(`bench flow-group: --${what} must be a positive integer, got ${s}`);
  return v;
};
const classes = int(values.classes, 'classes');
const perClass = int(values['per-class'], 'per-class');
const dim = int(values.dim, 'dim');
const hidden = int(values.hidden, 'hidden');
const batch = int(values.batch, 'batch');
const epochs = int(values.epochs, 'epochs');
const groupSize = int(values.group ?? values.classes, 'group');
const rounds = int(values.rounds, 'rounds');
const threads = int(values.threads, 'threads');
// Before the native backend loads; set ones win.
for (const [k, v] of Object.entries(nativeThreadEnv(threads))) process.env[k] ??= v;

const info = await selectBackend(values.backend as BackendName, 'training', () => {});
const cfg = { epochs, batchSize: batch, lr: 1e-3, hidden };

// Class-conditional Gaussians: each class a random centre plus unit noise (as bench/speed.ts).
const rng = new Rng(0);
const features = matrix(classes * perClass, dim);
const centres = Float32Array.from({ length: classes * dim }, () => rng.normal());
for (let i = 0; i < features.rows; i++) {
  const c = Math.floor(i / perClass);
  for (let j = 0; j < dim; j++) features.data[i * dim + j] = centres[c * dim + j] + rng.normal();
}
const classRows = (c: number): Matrix => matrix(perClass, dim, features.data.slice(c * perClass * dim, (c + 1) * perClass * dim));

async function perClassRun(): Promise<ClassFlow[]> {
  const flows: ClassFlow[] = [];
  for (let c = 0; c < classes; c++) flows.push((await trainClassFlow(classRows(c), cfg, c)).flow);
  return flows;
}

async function groupedRun(): Promise<ClassFlow[]> {
  const flows: ClassFlow[] = [];
  for (const group of classGroups(classes, groupSize))
    flows.push(
      ...(
        await trainFlowGroup(
          group.map((c) => ({ features: classRows(c), seed: c })),
          cfg,
        )
      ).flows,
    );
  return flows;
}

/** Kernels one training step runs for `g` classes: a run of two steps less a run of one (set-up cancels). */
async function kernelsPerStep(g: number): Promise<number> {
  return (await kernelsOfRun(g, 2)) - (await kernelsOfRun(g, 1));
}

async function kernelsOfRun(g: number, stepCount: number): Promise<number> {
  const small = { ...cfg, epochs: stepCount };
  const rows = batch; // one step per epoch
  const prof = await tf.profile(async () => {
    if (g === 1) (await trainClassFlow(matrix(rows, dim, classRows(0).data.slice(0, rows * dim)), small, 0)).flow.dispose();
    else
      (
        await trainFlowGroup(
          Array.from({ length: g }, (_, c) => ({ features: matrix(rows, dim, classRows(c).data.slice(0, rows * dim)), seed: c })),
          small,
        )
      ).flows.forEach((f) => f.dispose());
  });
  return prof.kernels.length;
}

const steps = classes * epochs * Math.ceil(perClass / batch);
console.log(
  `# flow groups: ${classes} classes x ${perClass} rows x ${dim} dims, hidden ${hidden}, batch ${batch}, ${epochs} epoch(s); ` +
    `groups of ${groupSize}; backend ${info.name}; ${cpus().length} cores, load ${loadavg()[0].toFixed(1)}`,
);
const kernels = { perClass: await kernelsPerStep(1), grouped: await kernelsPerStep(Math.min(groupSize, classes)) };
console.log(`kernels per step: one class ${kernels.perClass}, a group of ${Math.min(groupSize, classes)} ${kernels.grouped}`);

// Warm-up (kernel setup), then interleaved rounds; the best round of each counts.
(await groupedRun()).forEach((f) => f.dispose());
const runs: { perClass: { s: number; cpuS: number }[]; grouped: { s: number; cpuS: number }[] } = { perClass: [], grouped: [] };
let maxAbsDiff = 0;
let density: { perClass: number; grouped: number } = { perClass: Infinity, grouped: Infinity };
for (let r = 0; r < rounds; r++) {
  const a = await timed(perClassRun);
  const b = await timed(groupedRun);
  runs.perClass.push({ s: a.s, cpuS: a.cpuS });
  runs.grouped.push({ s: b.s, cpuS: b.cpuS });
  for (let c = 0; c < classes; c++) {
    const wa = a.value[c].toJSON().weights;
    const wb = b.value[c].toJSON().weights;
    for (const k of Object.keys(wa))
      for (let i = 0; i < wa[k].length; i++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(wa[k][i] - wb[k][i]));
  }
  const da = await timed(() => densityMatrix(a.value, features));
  const db = await timed(() => densityMatrix(b.value, features));
  density = { perClass: Math.min(density.perClass, da.s), grouped: Math.min(density.grouped, db.s) };
  [...a.value, ...b.value].forEach((f) => f.dispose());
  console.error(`round ${r + 1}: per class ${a.s.toFixed(2)} s, grouped ${b.s.toFixed(2)} s`);
}
const best = (xs: { s: number }[]) => Math.min(...xs.map((x) => x.s));
const perStepMs = { perClass: (1000 * best(runs.perClass)) / steps, grouped: (1000 * best(runs.grouped)) / steps };
console.log('| trainer | train s | ms per class-step | CPU s | density matrix s | speed-up (train) |');
console.log('|---|---|---|---|---|---|');
console.log(
  `| per class (trainClassFlow) | ${best(runs.perClass).toFixed(2)} | ${perStepMs.perClass.toFixed(2)} | ${runs.perClass[0].cpuS.toFixed(2)} | ${density.perClass.toFixed(2)} | 1.00x |`,
);
console.log(
  `| grouped (trainFlowGroup, ${groupSize}) | ${best(runs.grouped).toFixed(2)} | ${perStepMs.grouped.toFixed(2)} | ${runs.grouped[0].cpuS.toFixed(2)} | ${density.grouped.toFixed(2)} | ${(best(runs.perClass) / best(runs.grouped)).toFixed(2)}x |`,
);
console.log(`largest weight difference, grouped vs per class: ${maxAbsDiff.toExponential(2)}`);

const date = new Date().toISOString();
const out = values.json ?? join(repoRoot, 'bench', 'results', `flow-group-${date.slice(0, 10)}.json`);
await mkdir(dirname(out), { recursive: true });
await writeFile(
  out,
  JSON.stringify(
    {
      date,
      backend: info.name,
      threads,
      cpus: cpus().length,
      loadAverage: loadavg()[0],
      shape: { classes, perClass, dim, hidden, batch, epochs, groupSize },
      kernelsPerStep: kernels,
      runs,
      perStepMs,
      densityS: density,
      speedup: best(runs.perClass) / best(runs.grouped),
      maxAbsWeightDiff: maxAbsDiff,
      // Train time scaled to the configured 50 epochs, plus the density matrix, as bench/speed.ts
      // reports flows-and-density; PyTorch is not run here (bench/speed.ts runs it side by side).
      flowsAndDensityS: {
        perClass: best(runs.perClass) * (50 / epochs) + density.perClass,
        grouped: best(runs.grouped) * (50 / epochs) + density.grouped,
      },
      ratioVsTorch: null,
    },
    null,
    2,
  ) + '\n',
);
console.log(`wrote ${out}`);
