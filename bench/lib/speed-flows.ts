// (c) of `npm run bench -- speed`: per-class flow training and the density matrix, ours (one class
// at a time and in the pipeline's lockstep groups, ml/flow-group.ts) and PyTorch (bench/torch/flows.py).
import { runTorch } from './processes.js';
import { f1, ours, torchRowFor, type Measurement, type Settings } from './speed-common.js';
import type { FlowResult } from './speed-worker.js';

/** (c): per-class flows and the density matrix, ours (one at a time and grouped) and PyTorch; prints the table. */
export async function measureFlows(s: Settings): Promise<{ rows: unknown[]; measurements: Measurement[] }> {
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
    const t = backend === 'tensorflow' || backend === 'tensorflow-gpu' ? String(s.threads) : '1';
    // The pipeline's trainer (groups as workflows/dag.ts flowGroupSize makes them for these
    // classes) and, on the native backend, the one-class-at-a-time trainer it replaced, side by side.
    // The pure-JS backend takes ~0.4 s per batch: there one class of the per-class trainer stands for all.
    const variants: (number | undefined)[] =
      backend === 'cpu' ? [undefined] : backend.startsWith('tensorflow') ? [undefined, s.groupSize] : [s.groupSize];
    for (const g of variants) {
      const trainClasses = g ? s.flowClasses : backend === 'cpu' ? 1 : s.flowTrainClasses;
      const r = await ours<FlowResult>(
        {
          kind: 'flows',
          backend,
          classes: s.flowClasses,
          perClass: s.flowPerClass,
          dim: s.flowDim,
          hidden: s.hidden,
          epochs: s.flowEpochs,
          trainClasses,
          ...(g ? { groupSize: g } : {}),
        },
        s.threads,
      );
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
