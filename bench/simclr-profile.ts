// Where a SimCLR training step's time goes, ours (native TensorFlow through tfjs-node) beside
// PyTorch on the same network, batch and threads (issue 12: profile before changing anything).
// Ours: tf.profile over one step after a warm-up, every kernel timed by the backend (tfjs-node
// runs each kernel synchronously, so a kernel's time is its own); what is left of the step's
// wall time is JavaScript: autograd bookkeeping, op dispatch, tensor creation and disposal. A
// kernel that runs others (tfjs-node's Step runs IsNan, Greater, Select, ...) is counted with them.
// PyTorch: torch.profiler's self CPU time per operator (bench/torch/resnet_simclr.py --profile).
// Both are sorted into the same categories by kernel / operator name.
//
//   npm run bench -- simclr-profile [--width 64] [--batch 64] [--threads 2] [--skip-torch] [--json out.json]
//
// Writes bench/results/simclr-profile-<date>.json.
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '../backend/backend.js';
import { repoRoot } from '../data/paths.js';
import { nativeThreadEnv, runTorch } from './lib/processes.js';
import { simclrBenchStep } from './lib/simclr-step.js';
import { timed } from './lib/timed.js';

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    width: { type: 'string', default: '64' },
    batch: { type: 'string', default: '64' },
    threads: { type: 'string', default: '2' },
    'skip-torch': { type: 'boolean', default: false },
    json: { type: 'string' },
  },
});
const int = (s: string, what: string): number => {
  const v = Number(s);
  if (!Number.isInteger(v) || v < 1) throw new Error(`bench simclr-profile: --${what} must be a positive integer, got ${s}`);
  return v;
};
const width = int(values.width, 'width');
const batch = int(values.batch, 'batch');
const threads = int(values.threads, 'threads');
// Before the native backend loads; set ones win.
for (const [k, v] of Object.entries(nativeThreadEnv(threads))) process.env[k] ??= v;

/** The categories both sides are sorted into; the first whose test matches a name wins. */
const CATEGORIES: { name: string; ours?: RegExp; torch: RegExp }[] = [
  { name: 'convolution gradients', ours: /^Conv2DBackprop/, torch: /convolution_backward|conv.*backward/ },
  { name: 'convolution forward', ours: /^(Fused)?Conv2D$/, torch: /convolution|conv2d|mkldnn_conv/ },
  { name: 'batch norm (forward and gradient)', ours: /BatchNorm/, torch: /batch_norm/ },
  { name: 'ReLU gradient', ours: /^(BackdoorAuditReluGrad|Step|IsNan|Select)$/, torch: /threshold_backward/ },
  { name: 'matmul (projection head, NT-Xent)', ours: /MatMul/, torch: /^aten::(mm|addmm|bmm|matmul|linear)/ },
  // Ours: Adam's updates are plain elementwise kernels on the weights (OTHER below).
  { name: 'optimizer (Adam)', torch: /^Optimizer\.step|_foreach|^aten::(lerp|addcdiv|addcmul)/ },
];
// Without backend/native-kernels.ts, batch norm's tf.moments + tf.batchNorm and ReLU's Step land here.
const OTHER_ACTIVATION = 'other elementwise kernels and reductions on activations (residual adds; unfused batch norm, ReLU gradient)';
const OTHER = 'elementwise and reductions on weights and scalars (ours: Adam, loss)';

interface KernelRow {
  name: string;
  count: number;
  ms: number;
}

async function ours(): Promise<Record<string, unknown>> {
  const info = await selectBackend('tensorflow', 'training', () => {});
  const { step, dispose } = simclrBenchStep(width, batch);
  await step(); // warm-up: oneDNN primitive creation, heap growth
  const plain = await timed(step);
  let profiled = 0;
  const profile = await tf.profile(async () => {
    const t0 = performance.now();
    await step();
    profiled = (performance.now() - t0) / 1000;
  });
  dispose();
  const byName = new Map<string, KernelRow>();
  const byCategory = new Map<string, number>();
  let kernelMs = 0;
  for (const k of profile.kernels) {
    // `<op>__op` entries are an op's scope around the kernels it runs, which are listed too.
    if (k.name.endsWith('__op')) continue;
    const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    kernelMs += ms;
    const row = byName.get(k.name) ?? { name: k.name, count: 0, ms: 0 };
    row.count++;
    row.ms += ms;
    byName.set(k.name, row);
    // Both views go through the network together: an activation's leading dimension is 2 x batch.
    const touchesActivations = [...k.inputShapes, ...k.outputShapes].some((s) => s?.length === 4 && s[0] === 2 * batch);
    const category = CATEGORIES.find((c) => c.ours?.test(k.name))?.name ?? (touchesActivations ? OTHER_ACTIVATION : OTHER);
    byCategory.set(category, (byCategory.get(category) ?? 0) + ms);
  }
  return {
    backend: info.name,
    device: info.device,
    stepS: plain.s,
    stepCpuS: plain.cpuS,
    profiledStepS: profiled,
    kernels: profile.kernels.length,
    kernelS: kernelMs / 1000,
    peakBytes: profile.peakBytes,
    categories: Object.fromEntries([...byCategory].map(([c, ms]) => [c, ms / 1000])),
    topKernels: [...byName.values()].sort((a, b) => b.ms - a.ms).slice(0, 15),
  };
}

async function torch(): Promise<Record<string, unknown> | { error: string }> {
  const args = ['--width', String(width), '--batch', String(batch), '--threads', String(threads)];
  const r = await runTorch<{ train_step_s: number; profile: { name: string; count: number; self_ms: number }[] }>('resnet_simclr.py', [
    ...args,
    '--steps',
    '1',
    '--infer-batches',
    '1',
    '--profile',
  ]);
  if (!r.ok || !r.result) return { error: r.error ?? 'no result' };
  const { train_step_s: stepS, profile } = r.result;
  const byCategory = new Map<string, number>();
  let total = 0;
  for (const op of profile) {
    total += op.self_ms;
    const category = CATEGORIES.find((c) => c.torch.test(op.name))?.name ?? 'everything else';
    byCategory.set(category, (byCategory.get(category) ?? 0) + op.self_ms);
  }
  return {
    stepS,
    profiledS: total / 1000,
    categories: Object.fromEntries([...byCategory].map(([c, ms]) => [c, ms / 1000])),
    topOps: [...profile].sort((a, b) => b.self_ms - a.self_ms).slice(0, 15),
  };
}

const f2 = (x: unknown) => (typeof x === 'number' ? x.toFixed(2) : '-');
const result: Record<string, unknown> = {
  date: new Date().toISOString(),
  cpu: cpus()[0]?.model,
  cpus: cpus().length,
  loadAverage: loadavg()[0],
  width,
  batch,
  threads,
};
result['ours'] = await ours();
result['torch'] = values['skip-torch'] ? { error: 'skipped' } : await torch();
const o = result['ours'] as { categories: Record<string, number>; stepS: number; profiledStepS: number; kernelS: number; kernels: number };
const t = result['torch'] as { categories?: Record<string, number>; stepS?: number; profiledS?: number };
console.log(`# SimCLR step profile: ResNet-18 width ${width}, batch ${batch} (${2 * batch} views), ${threads} threads`);
console.log(`ours: step ${f2(o.stepS)} s (${f2(o.profiledStepS)} s profiled), ${o.kernels} kernels, ${f2(o.kernelS)} s in kernels`);
console.log(`PyTorch: step ${f2(t.stepS)} s, ${f2(t.profiledS)} s of operator self time profiled\n`);
console.log('| where | ours s | PyTorch s |');
console.log('|---|---|---|');
const names = new Set([...Object.keys(o.categories), ...Object.keys(t.categories ?? {})]);
for (const c of names) console.log(`| ${c} | ${f2(o.categories[c])} | ${f2(t.categories?.[c])} |`);
console.log(`| outside kernels (JavaScript: autograd, dispatch, tensor bookkeeping) | ${f2(o.profiledStepS - o.kernelS)} | - |`);
const out = values.json ?? join(repoRoot, 'bench', 'results', `simclr-profile-${String(result['date']).slice(0, 10)}.json`);
await mkdir(dirname(out), { recursive: true });
await writeFile(out, JSON.stringify(result, null, 2) + '\n');
console.log(`\nwrote ${out}`);
