// (a) and (b) of `npm run bench -- speed`: a SimCLR training step and feature inference of
// ResNet-18, ours (each backend in its own child process) and PyTorch (bench/torch/resnet_simclr.py).
import { runTorch } from './processes.js';
import { f1, ours, torchRowFor, type Measurement, type Settings } from './speed-common.js';
import type { SimclrResult } from './speed-worker.js';

/** (a) and (b): a SimCLR training step and feature inference, ours and PyTorch; prints the table. */
export async function measureResnet(s: Settings): Promise<{ rows: unknown[]; measurements: Measurement[] }> {
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
    const r = await ours<SimclrResult>(
      { kind: 'simclr', backend, width: s.width, batch: b, steps: s.steps, inferBatches: s.inferBatches },
      s.threads,
    );
    const t = backend === 'tensorflow' || backend === 'tensorflow-gpu' ? String(s.threads) : '1';
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
