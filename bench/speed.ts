// Side-by-side speed of our tensor backends against PyTorch on the CPU, in one run on one
// machine:
//   (a) a SimCLR training step of ResNet-18 (CIFAR stem) on 32x32 images: images/s;
//   (b) inference (backbone features) with the same network: images/s;
//   (c) per-class flow training + the density matrix on classes x perClass features: seconds;
//       ours both one class at a time and in lockstep groups (ml/flow-group.ts, the pipeline's way).
// Every measurement runs in its own child process (a fresh wasm heap, no backend left over from
// the previous one). PyTorch runs from .venv-bench (scripts/setup-bench-venv.sh).
//
//   npm run bench -- speed [--quick] [--backends tensorflow,wasm,cpu] [--batch 256] [--steps 2]
//                          [--width 64] [--wasm-batch 32] [--cpu-batch 1] [--native-batch 256] [--flow-epochs 1] [--torch-threads 2]
//                          [--skip-torch] [--skip-flows] [--skip-resnet] [--json out.json]
//
// Writes every figure to bench/results/speed-<date>.json (speed-<date>-quick.json with --quick;
// --json names another file), each measurement with `ratioVsTorch`: ours / PyTorch in throughput
// terms, above 1 when ours is faster.
//
// Timings are wall-clock seconds per step after one warm-up step; CPU seconds (all threads of
// the process) are printed beside them because on a shared machine the wall time of a
// multi-threaded run suffers most from other load. tfjs keeps every tensor of the forward pass
// until the gradients are taken (~24 MB per 32x32 view at width 64), so wasm (4 GiB heap) is
// measured at --wasm-batch 32 and the pure-JS cpu backend (minutes per step) at --cpu-batch 1;
// their images/s are taken as batch-independent. Flow training measured for fewer epochs or
// classes is scaled linearly to all classes for the configured 50 epochs. The table says where.
// --quick (< 15 min on 2 cores): batch 64, 3 steps and 10 inference batches (on these shared
// 2-core machines one step or batch varied by up to 30% between runs), 2 of 10 flows, cpu skipped.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import type { BackendName } from '../backend/backend.js';
import { defaultAuditConfig } from '../ml/config.js';
import { repoRoot } from '../data/paths.js';
import { defaultFlowGroupSize } from '../workflows/dag.js';
import { nativeThreadEnv, runChild, runTorch, TORCH_PYTHON, type Outcome } from './lib/processes.js';
import { worker, type FlowResult, type SimclrResult, type Task } from './lib/speed-worker.js';

// Every measurement of ours runs in a child process of this script (`--worker`, bench/lib/speed-worker.ts).
function ours<T>(task: Task): Promise<Outcome<T & { backend: string }>> {
  const self = fileURLToPath(import.meta.url);
  return runChild(process.execPath, ['--import', 'tsx', self, '--worker', JSON.stringify(task)], nativeThreadEnv(threads), (out) => {
    const line = out.split('\n').find((l) => l.startsWith('RESULT '));
    if (!line) throw new Error('no RESULT line');
    return JSON.parse(line.slice('RESULT '.length)) as T & { backend: string };
  });
}

const execFileP = promisify(execFile);

async function versions(): Promise<string> {
  const { version_core: core } = await import('@tensorflow/tfjs-core');
  let torchVersion = 'not installed';
  if (existsSync(TORCH_PYTHON)) {
    try {
      const { stdout } = await execFileP(TORCH_PYTHON, [
        '-c',
        'import torch, platform; print(torch.__version__, "python", platform.python_version())',
      ]);
      torchVersion = stdout.trim();
    } catch (err) {
      torchVersion = `broken (${(err as Error).message.split('\n')[0]})`;
    }
  }
  return `node ${process.version}, tfjs ${core}, torch ${torchVersion}`;
}

const f1 = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

/**
 * One figure of the JSON: a throughput (images/s) or a time (s) of one implementation, with
 * `ratioVsTorch`, ours over PyTorch's in throughput terms (above 1: we are faster; a time's ratio
 * is PyTorch's time over ours), against the PyTorch row with the same thread count when there is
 * one, else the first; null when PyTorch was not measured.
 */
interface Measurement {
  measurement: 'simclr-train' | 'inference' | 'flows-and-density';
  impl: string;
  threads: string;
  unit: 'images/s' | 's';
  value: number;
  torchThreads: string | null;
  ratioVsTorch: number | null;
}

/** The PyTorch row a row of ours is compared with: same threads when measured, else the first measured. */
function torchRowFor<R extends { impl: string; threads: string }>(rows: R[], row: R, has: (r: R) => boolean): R | undefined {
  const torch = rows.filter((r) => r.impl === 'PyTorch' && has(r));
  return torch.find((r) => r.threads === row.threads) ?? torch[0];
}

let threads = 2;

/** What main() parsed from the command line: the shape of every measurement. */
interface Settings {
  quick: boolean;
  width: number;
  batch: number;
  steps: number;
  /** The batch each backend is measured at (see main). */
  batchFor: Record<string, number>;
  inferBatches: number;
  flowEpochs: number;
  flowClasses: number;
  flowPerClass: number;
  flowTrainClasses: number;
  flowDim: number;
  torchThreads: number[];
  backends: BackendName[];
  skipTorch: boolean;
  /** The audit's flow epochs: measured flow time is scaled to them. */
  configuredEpochs: number;
  /** The pipeline's flow group size for flowClasses classes (workflows/dag.ts). */
  groupSize: number;
  hidden: number;
}

/** (a) and (b): a SimCLR training step and feature inference, ours and PyTorch; prints the table. */
async function measureResnet(s: Settings): Promise<{ rows: unknown[]; measurements: Measurement[] }> {
  const measurements: Measurement[] = [];
  type Row = {
    impl: string;
    threads: string;
    measuredBatch: number;
    stepS?: number;
    stepCpuS?: number;
    trainIps?: number;
    inferIps?: number;
    augmentS?: number;
    note?: string;
  };
  const rows: Row[] = [];
  for (const tt of s.skipTorch ? [] : s.torchThreads) {
    const r = await runTorch<{
      train_step_s: number;
      train_step_cpu_s: number;
      infer_batch_s: number;
      train_images_per_s: number;
      infer_images_per_s: number;
    }>('resnet_simclr.py', [
      '--width',
      String(s.width),
      '--batch',
      String(s.batch),
      '--steps',
      String(s.steps),
      '--infer-batches',
      String(s.inferBatches),
      '--threads',
      String(tt),
    ]);
    rows.push(
      r.ok && r.result
        ? {
            impl: 'PyTorch',
            threads: String(tt),
            measuredBatch: s.batch,
            stepS: r.result.train_step_s,
            stepCpuS: r.result.train_step_cpu_s,
            trainIps: r.result.train_images_per_s,
            inferIps: r.result.infer_images_per_s,
          }
        : { impl: 'PyTorch', threads: String(tt), measuredBatch: s.batch, note: r.error },
    );
    console.error(`resnet: PyTorch ${tt} threads done`);
  }
  for (const backend of s.backends) {
    if (backend === 'cpu' && s.quick) {
      rows.push({ impl: 'ours: cpu', threads: '1', measuredBatch: 0, note: 'skipped in --quick (minutes per step at width 64)' });
      continue;
    }
    const b = s.batchFor[backend] ?? s.batch;
    const r = await ours<SimclrResult>({ kind: 'simclr', backend, width: s.width, batch: b, steps: s.steps, inferBatches: s.inferBatches });
    const t = backend === 'tensorflow' || backend === 'tensorflow-gpu' ? String(threads) : '1';
    rows.push(
      r.ok && r.result
        ? {
            impl: `ours: ${r.result.backend}`,
            threads: t,
            measuredBatch: b,
            stepS: r.result.stepS,
            stepCpuS: r.result.stepCpuS,
            trainIps: b / r.result.stepS,
            inferIps: b / r.result.inferS,
            augmentS: r.result.augmentS,
          }
        : { impl: `ours: ${backend}`, threads: t, measuredBatch: b, note: r.error },
    );
    console.error(`resnet: ${backend} done`);
  }
  const ref = rows.find((r) => r.impl === 'PyTorch' && r.trainIps !== undefined);
  console.log(
    `\n## (a) SimCLR training step and (b) feature inference: ResNet-18 width ${s.width}, CIFAR stem, 32x32, batch ${s.batch} (${2 * s.batch} views per step)`,
  );
  console.log(
    '| implementation | threads | batch measured | s / step | CPU s / step | train images/s | PyTorch / ours (train) | inference images/s | PyTorch / ours (inference) | augmentation s / batch |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    if (r.trainIps === undefined) {
      console.log(`| ${r.impl} | ${r.threads} | - | - | - | unavailable: ${r.note ?? '?'} | - | - | - | - |`);
      continue;
    }
    const ratio = (mine?: number, theirs?: number) => (mine && theirs ? `${f1(theirs / mine)}x` : '-');
    const scaled = r.measuredBatch !== s.batch ? ' (images/s taken as batch-independent)' : '';
    console.log(
      `| ${r.impl} | ${r.threads} | ${r.measuredBatch}${scaled} | ${f1(r.stepS!)} | ${f1(r.stepCpuS!)} | ${f1(r.trainIps)} | ${ratio(r.trainIps, ref?.trainIps)} | ` +
        `${f1(r.inferIps!)} | ${ratio(r.inferIps, ref?.inferIps)} | ${r.augmentS === undefined ? '-' : f1(r.augmentS)} |`,
    );
  }
  for (const r of rows) {
    if (r.trainIps === undefined) continue;
    const torchRow = torchRowFor(rows, r, (t) => t.trainIps !== undefined);
    for (const [measurement, value, theirs] of [
      ['simclr-train', r.trainIps, torchRow?.trainIps],
      ['inference', r.inferIps!, torchRow?.inferIps],
    ] as const) {
      measurements.push({
        measurement,
        impl: r.impl,
        threads: r.threads,
        unit: 'images/s',
        value,
        torchThreads: torchRow?.threads ?? null,
        ratioVsTorch: theirs ? value / theirs : null,
      });
    }
  }
  return { rows, measurements };
}

/** (c): per-class flows and the density matrix, ours (one at a time and grouped) and PyTorch; prints the table. */
async function measureFlows(s: Settings): Promise<{ rows: unknown[]; measurements: Measurement[] }> {
  const measurements: Measurement[] = [];
  type Row = { impl: string; threads: string; trainS?: number; trainCpuS?: number; densityS?: number; scale?: number; note?: string };
  const rows: Row[] = [];
  // Classes train independently on equal-sized sets, so the time is linear in both.
  const scale = (s.configuredEpochs / s.flowEpochs) * (s.flowClasses / s.flowTrainClasses);
  for (const tt of s.skipTorch ? [] : s.torchThreads) {
    const r = await runTorch<{ train_s: number; train_cpu_s: number; density_s: number }>('flows.py', [
      '--classes',
      String(s.flowClasses),
      '--per-class',
      String(s.flowPerClass),
      '--dim',
      String(s.flowDim),
      '--hidden',
      String(s.hidden),
      '--epochs',
      String(s.flowEpochs),
      '--threads',
      String(tt),
      '--train-classes',
      String(s.flowTrainClasses),
    ]);
    rows.push(
      r.ok && r.result
        ? {
            impl: 'PyTorch',
            threads: String(tt),
            trainS: r.result.train_s,
            trainCpuS: r.result.train_cpu_s,
            densityS: r.result.density_s,
            scale,
          }
        : { impl: 'PyTorch', threads: String(tt), note: r.error },
    );
    console.error(`flows: PyTorch ${tt} threads done`);
  }
  for (const backend of s.backends) {
    if (backend === 'cpu' && s.quick) {
      rows.push({ impl: 'ours: cpu', threads: '1', note: 'skipped in --quick (~0.4 s per batch of 16)' });
      continue;
    }
    const t = backend === 'tensorflow' || backend === 'tensorflow-gpu' ? String(threads) : '1';
    // The pipeline's trainer (groups as workflows/dag.ts flowGroupSize makes them for these
    // classes) and, on the native backend, the one-class-at-a-time trainer it replaced, side by side.
    // The pure-JS backend takes ~0.4 s per batch: there one class of the per-class trainer stands for all.
    const variants: (number | undefined)[] =
      backend === 'cpu' ? [undefined] : backend.startsWith('tensorflow') ? [undefined, s.groupSize] : [s.groupSize];
    for (const g of variants) {
      const trainClasses = g ? s.flowClasses : backend === 'cpu' ? 1 : s.flowTrainClasses;
      const r = await ours<FlowResult>({
        kind: 'flows',
        backend,
        classes: s.flowClasses,
        perClass: s.flowPerClass,
        dim: s.flowDim,
        hidden: s.hidden,
        epochs: s.flowEpochs,
        trainClasses,
        ...(g ? { groupSize: g } : {}),
      });
      const how = g ? `groups of ${g}` : 'one class at a time';
      const rowScale = (s.configuredEpochs / s.flowEpochs) * (s.flowClasses / trainClasses);
      rows.push(
        r.ok && r.result
          ? {
              impl: `ours: ${r.result.backend}, ${how}`,
              threads: t,
              trainS: r.result.trainS,
              trainCpuS: r.result.trainCpuS,
              densityS: r.result.densityS,
              scale: rowScale,
              note: trainClasses !== s.flowTrainClasses ? `${trainClasses} flow${trainClasses === 1 ? '' : 's'} trained` : undefined,
            }
          : { impl: `ours: ${backend}, ${how}`, threads: t, note: r.error },
      );
      console.error(`flows: ${backend}, ${how} done`);
    }
  }
  const ref = rows.find((r) => r.impl === 'PyTorch' && r.trainS !== undefined);
  console.log(
    `\n## (c) Per-class flows: ${s.flowClasses} classes x ${s.flowPerClass} features of ${s.flowDim} dims, hidden ${s.hidden}, batch 16; ` +
      `one class at a time (PyTorch, as the paper's code does, and our per-class trainer): ${s.flowTrainClasses} of the ${s.flowClasses} flows trained for ${s.flowEpochs} epoch(s), ` +
      `time scaled x${f1(scale)} to all ${s.flowClasses} for ${s.configuredEpochs} epochs; ours in groups of ${s.groupSize} (the pipeline's default for ${s.flowClasses} classes): ` +
      `all ${s.flowClasses} trained for ${s.flowEpochs} epoch(s), scaled x${f1(s.configuredEpochs / s.flowEpochs)}; then the ${s.flowClasses * s.flowPerClass} x ${s.flowClasses} density matrix`,
  );
  console.log(
    `| implementation | threads | train s (measured) | CPU s | train s (${s.flowClasses} flows x ${s.configuredEpochs} epochs, scaled) | density matrix s | total s | ours / PyTorch (total time) |`,
  );
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    if (r.trainS === undefined) {
      console.log(`| ${r.impl} | ${r.threads} | unavailable: ${r.note ?? '?'} | - | - | - | - | - |`);
      continue;
    }
    const total = r.trainS * r.scale! + r.densityS!;
    const refTotal = ref ? ref.trainS! * ref.scale! + ref.densityS! : undefined;
    const note = r.note ? ` (${r.note}, x${f1(r.scale!)})` : '';
    console.log(
      `| ${r.impl} | ${r.threads} | ${f1(r.trainS)}${note} | ${f1(r.trainCpuS!)} | ${f1(r.trainS * r.scale!)} | ${f1(r.densityS!)} | ${f1(total)} | ${refTotal ? `${f1(total / refTotal)}x` : '-'} |`,
    );
  }
  const totalS = (r: Row) => r.trainS! * r.scale! + r.densityS!;
  for (const r of rows) {
    if (r.trainS === undefined) continue;
    const torchRow = torchRowFor(rows, r, (t) => t.trainS !== undefined);
    measurements.push({
      measurement: 'flows-and-density',
      impl: r.impl,
      threads: r.threads,
      unit: 's',
      value: totalS(r),
      torchThreads: torchRow?.threads ?? null,
      ratioVsTorch: torchRow ? totalS(torchRow) / totalS(r) : null,
    });
  }
  return { rows, measurements };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      worker: { type: 'string' },
      quick: { type: 'boolean', default: false },
      backends: { type: 'string', default: 'tensorflow,wasm,cpu' },
      batch: { type: 'string' },
      steps: { type: 'string' },
      width: { type: 'string', default: '64' },
      'cpu-batch': { type: 'string' },
      'wasm-batch': { type: 'string' },
      'native-batch': { type: 'string' },
      'infer-batches': { type: 'string' },
      'flow-epochs': { type: 'string' },
      'flow-classes': { type: 'string', default: '10' },
      'flow-per-class': { type: 'string', default: '5000' },
      'flow-train-classes': { type: 'string' },
      'flow-dim': { type: 'string', default: '512' },
      threads: { type: 'string', default: '2' },
      'torch-threads': { type: 'string' },
      'skip-torch': { type: 'boolean', default: false },
      'skip-flows': { type: 'boolean', default: false },
      'skip-resnet': { type: 'boolean', default: false },
      json: { type: 'string' },
    },
  });
  if (values.worker !== undefined) {
    await worker(JSON.parse(values.worker) as Task);
    return;
  }
  const quick = values.quick;
  const int = (s: string | undefined, fallback: number, what: string): number => {
    const v = s === undefined ? fallback : Number(s);
    if (!Number.isInteger(v) || v < 1) throw new Error(`bench speed: --${what} must be a positive integer, got ${s}`);
    return v;
  };
  threads = int(values.threads, 2, 'threads');
  const width = int(values.width, 64, 'width');
  const batch = int(values.batch, quick ? 64 : 256, 'batch');
  const steps = int(values.steps, quick ? 3 : 2, 'steps');
  // tfjs keeps every tensor of the forward pass until the gradients are taken: ~24 MB per view
  // at width 64 (measured), so the 4 GiB wasm heap holds 2 x 32 views; the pure-JS backend
  // needs minutes per view pair (its Conv2DBackpropFilter is a scalar loop).
  const batchFor: Record<string, number> = {
    cpu: Math.min(batch, int(values['cpu-batch'], 1, 'cpu-batch')),
    wasm: Math.min(batch, int(values['wasm-batch'], 32, 'wasm-batch')),
    tensorflow: Math.min(batch, int(values['native-batch'], batch, 'native-batch')),
  };
  const inferBatches = int(values['infer-batches'], quick ? 10 : 3, 'infer-batches');
  const flowEpochs = int(values['flow-epochs'], 1, 'flow-epochs');
  const flowClasses = int(values['flow-classes'], 10, 'flow-classes');
  const flowPerClass = int(values['flow-per-class'], 5000, 'flow-per-class');
  const flowTrainClasses = Math.min(flowClasses, int(values['flow-train-classes'], quick ? 2 : flowClasses, 'flow-train-classes'));
  const flowDim = int(values['flow-dim'], 512, 'flow-dim');
  // Also one thread: wasm and cpu are single-threaded, and on a busy machine two PyTorch
  // threads can lose more to contention than they gain.
  const torchThreads = (values['torch-threads'] ?? (threads === 1 ? '1' : `${threads},1`))
    .split(',')
    .map((s) => int(s, threads, 'torch-threads'));
  const backends = values.backends.split(',').map((s) => s.trim()) as BackendName[];
  const configuredEpochs = defaultAuditConfig.flow.epochs;
  // What the pipeline's flow stage does for these classes by default (workflows/dag.ts).
  const groupSize = defaultFlowGroupSize(flowClasses);
  const hidden = defaultAuditConfig.flow.hidden;

  console.log(`# Speed: ours vs PyTorch (CPU), ${new Date().toISOString()}`);
  console.log(
    `machine: ${cpus()[0]?.model ?? 'unknown cpu'}, ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; load average ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
  );
  console.log(`versions: ${await versions()}`);
  console.log(
    `threads: PyTorch ${torchThreads.join(', ')} (torch.set_num_threads); tensorflow (native) ${threads} intra-op; ` +
      'wasm 1 (tfjs-backend-wasm disables its threaded build under Node; SIMD build in use); cpu 1 (plain JS)',
  );
  if (loadavg()[0]! > 1) console.log('note: the machine is busy (load average > 1); wall times are inflated, multi-threaded runs most.');
  const report: Record<string, unknown> = { date: new Date().toISOString(), quick, width, batch, steps, threads, torchThreads, flowEpochs };
  const measurements: Measurement[] = [];

  const settings: Settings = {
    quick,
    width,
    batch,
    steps,
    batchFor,
    inferBatches,
    flowEpochs,
    flowClasses,
    flowPerClass,
    flowTrainClasses,
    flowDim,
    torchThreads,
    backends,
    skipTorch: values['skip-torch'],
    configuredEpochs,
    groupSize,
    hidden,
  };
  if (!values['skip-resnet']) {
    const r = await measureResnet(settings);
    report['resnet'] = r.rows;
    measurements.push(...r.measurements);
  }
  if (!values['skip-flows']) {
    const r = await measureFlows(settings);
    report['flows'] = r.rows;
    measurements.push(...r.measurements);
  }
  console.log(
    '\nRatios in the tables above 1x mean PyTorch is faster; `ratioVsTorch` in the JSON is the inverse (above 1: ours is faster).',
  );
  report['measurements'] = measurements;
  const out =
    values.json ?? join(repoRoot, 'bench', 'results', `speed-${String(report['date']).slice(0, 10)}${quick ? '-quick' : ''}.json`);
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, JSON.stringify(report, null, 2) + '\n');
  console.log(`wrote ${out}`);
}

await main();
