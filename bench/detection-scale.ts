// How detection grows with scale: BadNets 10% (target 0) on CIFAR-10 subsets, audited with
// SimCLR encoders trained for more epochs on more images per class. Prints one row per
// (images per class, encoder epochs): flagged classes, TPR/FPR of D^_P, relabel accuracy, time.
//
//   npm run bench -- detection-scale [--per-class 100,500] [--epochs 5,20] [--width 16] [--seed 0]
import { mkdtemp, rm } from 'node:fs/promises';
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
    'flow-epochs': { type: 'string', default: '20' },
    seed: { type: 'string', default: '0' },
  },
});
const list = (s: string): number[] => s.split(',').map(Number);

const cifar = await ensureCifar10();
const work = await mkdtemp(join(tmpdir(), 'bench-detection-'));
console.log('| images/class | encoder epochs | backend | flagged (kind) | target hit | TPR | FPR | relabel acc. | time (s) |');
console.log('|---|---|---|---|---|---|---|---|---|');
try {
  for (const perClass of list(values['per-class'])) {
    const dir = join(work, `train-${perClass}`);
    const manifest = await ingest({ format: 'imagefolder', root: cifar.train }, dir, { imageSize: 32, limitPerClass: perClass });
    const attack = { name: 'badnets' as const, targetClass: 0, rate: 0.1, seed: Number(values.seed) };
    const { poisoned, truth } = await poisonDataset(await openDataset(dir), attack);
    for (const epochs of list(values.epochs)) {
      const config: AuditConfig = {
        ...defaultAuditConfig,
        seed: Number(values.seed),
        encoder: { ...defaultSimclrEncoder, width: Number(values.width), epochs },
        flow: { ...defaultAuditConfig.flow, epochs: Number(values['flow-epochs']) },
        retrain: undefined,
      };
      const t0 = performance.now();
      const { report } = await auditDataset(
        { name: `cifar10-${perClass}`, hash: sha256Hex(canonicalJson({ manifest: manifest.hash, attack })), train: poisoned, truth },
        config,
      );
      const e = report.evaluation ?? {};
      const flagged = report.classes.filter((c) => c.flagged).map((c) => `${c.index}(${c.kind === 'disruptive' ? 'D' : 'ND'})`);
      const pct = (x?: number): string => (x === undefined ? '-' : (100 * x).toFixed(1));
      console.log(
        `| ${perClass} | ${epochs} | ${report.backend} | ${flagged.join(' ') || 'none'} | ${e.targetDetected ? 'yes' : 'no'} | ` +
          `${pct(e.tpr)} | ${pct(e.fpr)} | ${pct(e.relabelAccuracy)} | ${((performance.now() - t0) / 1000).toFixed(0)} |`,
      );
    }
  }
} finally {
  await rm(work, { recursive: true, force: true });
}
