// How detection grows with scale: BadNets 10% (target 0) on CIFAR-10 subsets, audited with
// SimCLR encoders trained for more epochs on more images per class. Prints one row per
// (images per class, encoder epochs): flagged classes, TPR/FPR of D^_P, relabel accuracy, time.
//
// The same audit on the clean subset (`--conditions badnets,clean`) shows false flags. `--save dir`
// keeps every density matrix in the format `npm run bench -- nd-normalization --from dir` reads,
// to compare the S_ND normalisations on real SimCLR features.
//
//   npm run bench -- detection-scale [--per-class 100,500] [--epochs 3,12] [--width 8] [--flow-hidden 64] [--flow-epochs 5]
//                                    [--conditions badnets,clean] [--save dir] [--seed 0]
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { poisonDataset } from '../attacks/index.js';
import { ensureCifar10 } from '../data/cifar10.js';
import { canonicalJson, sha256Hex } from '../data/hash.js';
import { ingest, openDataset } from '../data/ingest.js';
import { auditDataset } from '../ml/audit.js';
import { defaultAuditConfig, defaultSimclrEncoder, type AuditConfig } from '../ml/config.js';

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    'per-class': { type: 'string', default: '100,300' },
    epochs: { type: 'string', default: '2,10' },
    width: { type: 'string', default: '16' },
    'flow-epochs': { type: 'string', default: '5' },
    'flow-hidden': { type: 'string', default: String(defaultAuditConfig.flow.hidden) },
    seed: { type: 'string', default: '0' },
    conditions: { type: 'string', default: 'badnets,clean' },
    save: { type: 'string' },
  },
});
const list = (s: string): number[] => s.split(',').map(Number);

const cifar = await ensureCifar10();
const work = await mkdtemp(join(tmpdir(), 'bench-detection-'));
console.log(
  '| data | images/class | encoder epochs | backend | flagged (kind) | target found | TPR % | FPR % | relabel acc. % | time (s) |',
);
console.log('|---|---|---|---|---|---|---|---|---|---|');
try {
  for (const perClass of list(values['per-class'])) {
    const dir = join(work, `train-${perClass}`);
    const manifest = await ingest({ format: 'imagefolder', root: cifar.train }, dir, { imageSize: 32, limitPerClass: perClass });
    const attack = { name: 'badnets' as const, targetClass: 0, rate: 0.1, seed: Number(values.seed) };
    const clean = await openDataset(dir);
    const { poisoned, truth } = await poisonDataset(clean, attack);
    for (const condition of values.conditions.split(',')) {
      if (condition !== 'badnets' && condition !== 'clean')
        throw new Error(`--conditions: unknown condition "${condition}" (badnets, clean)`);
      const train = condition === 'badnets' ? poisoned : clean;
      for (const epochs of list(values.epochs)) {
        const config: AuditConfig = {
          ...defaultAuditConfig,
          seed: Number(values.seed),
          encoder: { ...defaultSimclrEncoder, width: Number(values.width), epochs },
          flow: { ...defaultAuditConfig.flow, epochs: Number(values['flow-epochs']), hidden: Number(values['flow-hidden']) },
          retrain: undefined,
        };
        const t0 = performance.now();
        const { report, density } = await auditDataset(
          {
            name: `cifar10-${perClass}-${condition}`,
            hash: sha256Hex(canonicalJson({ manifest: manifest.hash, attack: condition === 'badnets' ? attack : null })),
            train,
            ...(condition === 'badnets' ? { truth } : {}),
          },
          config,
        );
        const e = report.evaluation ?? {};
        const flagged = report.classes.filter((c) => c.flagged).map((c) => `${c.index}(${c.kind === 'disruptive' ? 'D' : 'ND'})`);
        const pct = (x?: number): string => (x === undefined ? '-' : (100 * x).toFixed(1));
        const hit = condition === 'clean' ? (flagged.length ? 'false flag' : 'ok (none)') : e.targetDetected ? 'yes' : 'no';
        console.log(
          `| ${condition} | ${perClass} | ${epochs} | ${report.backend} | ${flagged.join(' ') || 'none'} | ${hit} | ` +
            `${pct(e.tpr)} | ${pct(e.fpr)} | ${pct(e.relabelAccuracy)} | ${((performance.now() - t0) / 1000).toFixed(0)} |`,
        );
        if (values.save) {
          const isPoisoned = new Uint8Array(train.size);
          if (condition === 'badnets') for (const i of truth.poisoned) isPoisoned[i] = 1;
          await mkdir(values.save, { recursive: true });
          const body = {
            dataset: `simclr-w${values.width}-e${epochs}-n${perClass}`,
            condition: condition === 'badnets' ? 'non-disruptive' : 'clean',
            trial: Number(values.seed),
            labels: Array.from(train.labels),
            truth: Array.from(isPoisoned),
            rows: density.rows,
            cols: density.cols,
            density: Array.from(density.data),
          };
          await writeFile(join(values.save, `${body.dataset}-${condition}.json`), JSON.stringify(body));
        }
      }
    }
  }
} finally {
  await rm(work, { recursive: true, force: true });
}
