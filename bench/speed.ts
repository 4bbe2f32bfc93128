// Side-by-side speed of our tensor backends against PyTorch on the CPU, in one run on one
// machine:
//   (a) a SimCLR training step of ResNet-18 (CIFAR stem) on 32x32 images: images/s;
//   (b) inference (backbone features) with the same network: images/s;
//   (c) per-class flow training + the density matrix on classes x perClass features: seconds;
//       ours both one class at a time and in lockstep groups (ml/flow-group.ts, the pipeline's way).
// Every measurement runs in its own child process (a fresh wasm heap, no backend left over from
// the previous one). PyTorch runs from .venv-bench (scripts/setup-bench-venv.sh). This file parses
// the command line and writes the report; (a) and (b) are bench/lib/speed-resnet.ts, (c)
// bench/lib/speed-flows.ts, and the child's side bench/lib/speed-worker.ts.
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
import { parseArgs, promisify } from 'node:util';
import type { BackendName } from '../backend/backend.js';
import { defaultAuditConfig } from '../ml/config.js';
import { repoRoot } from '../data/paths.js';
import { defaultFlowGroupSize } from '../workflows/dag.js';
import { TORCH_PYTHON } from './lib/processes.js';
import type { Measurement, Settings } from './lib/speed-common.js';
import { measureFlows } from './lib/speed-flows.js';
import { measureResnet } from './lib/speed-resnet.js';
import { worker, type Task } from './lib/speed-worker.js';

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
  const threads = int(values.threads, 2, 'threads');
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
    threads,
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
