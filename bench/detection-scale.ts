// How detection grows with scale: poisoned CIFAR-10 subsets (any attack of the matrix, with
// attacks.md's protocol; BadNets by default), audited with SimCLR encoders trained for more
// epochs on more images per class, without retraining. Prints one row per (condition, images
// per class, encoder epochs): flagged classes, TPR/FPR of D^_P, relabel accuracy, time.
//
// The same audit on the clean subset (`--conditions badnets,clean`) shows false flags. `--save dir`
// keeps every density matrix (and the features) in the format `npm run bench -- nd-normalization
// --from dir` reads, to study the detection statistics on real SimCLR features. `--store dir`
// keeps the artifact store, so a rerun with other flow or detection settings reuses the encoders.
//
//   npm run bench -- detection-scale [--per-class 100,500] [--epochs 3,12] [--width 8] [--flow-hidden 64] [--flow-epochs 5]
//                                    [--conditions badnets,blend,lc,clean] [--save dir] [--store dir] [--seed 0]
//                                    [--encoder-batch 256] [--encoder-lr 3e-4]
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { auditDataset } from '../activities/in-process.js';
import { parsePipeline } from '../client/pipeline.js';
import { openDataset } from '../data/dataset.js';
import type { PoisonTruth } from '../data/types.js';
import { readMatrix } from '../activities/io.js';
import { defaultAuditConfig } from '../ml/config.js';
import { isCleanLabel } from '../attacks/index.js';
import { benchAttack } from './lib/attacks.js';

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
    store: { type: 'string' },
    /** SimCLR batch size (default: the encoder's). */
    'encoder-batch': { type: 'string' },
    /** SimCLR learning rate (default: the encoder's). */
    'encoder-lr': { type: 'string' },
  },
});
const list = (s: string): number[] => s.split(',').map(Number);

const work = await mkdtemp(join(tmpdir(), 'bench-detection-'));
console.log(
  '| data | images/class | encoder epochs | backend | flagged (kind) | target found | TPR % | FPR % | relabel acc. % | time (s) |',
);
console.log('|---|---|---|---|---|---|---|---|---|---|');
try {
  for (const perClass of list(values['per-class'])) {
    for (const condition of values.conditions.split(',')) {
      const attack = benchAttack(condition, '--conditions');
      for (const epochs of list(values.epochs)) {
        // The audit as a pipeline file would state it, run in process through the same DAG.
        const name = `cifar10-${perClass}-${condition}-e${epochs}`;
        const file = join(work, `${name}.yaml`);
        const pipeline = await parsePipeline(
          stringify({
            name,
            dataset: { format: 'cifar10', split: 'train', imageSize: 32, limitPerClass: perClass, name: `cifar10-${perClass}` },
            ...(attack ? { attack: { ...attack, seed: Number(values.seed) } } : {}),
            audit: {
              seed: Number(values.seed),
              encoder: {
                kind: 'simclr',
                width: Number(values.width),
                epochs,
                ...(values['encoder-batch'] ? { batchSize: Number(values['encoder-batch']) } : {}),
                ...(values['encoder-lr'] ? { lr: Number(values['encoder-lr']) } : {}),
              },
              flow: { epochs: Number(values['flow-epochs']), hidden: Number(values['flow-hidden']) },
              retrain: false,
            },
            output: join(work, 'out', name),
          }),
          file,
        );
        const t0 = performance.now();
        const { report, density, outcomes, store } = await auditDataset(pipeline, { store: values.store ?? join(work, 'store') });
        const e = report.evaluation ?? {};
        const flagged = report.classes.filter((c) => c.flagged).map((c) => `${c.index}(${c.kind === 'disruptive' ? 'D' : 'ND'})`);
        const pct = (x?: number): string => (x === undefined ? '-' : (100 * x).toFixed(1));
        const hit = condition === 'clean' ? (flagged.length ? 'false flag' : 'ok (none)') : e.targetDetected ? 'yes' : 'no';
        console.log(
          `| ${condition} | ${perClass} | ${epochs} | ${report.backend} | ${flagged.join(' ') || 'none'} | ${hit} | ` +
            `${pct(e.tpr)} | ${pct(e.fpr)} | ${pct(e.relabelAccuracy)} | ${((performance.now() - t0) / 1000).toFixed(0)} |`,
        );
        if (values.save) {
          const trainRef = (outcomes.attack ?? outcomes.ingest).ref;
          const train = await openDataset(join(store.dir(trainRef), 'dataset'));
          const isPoisoned = new Uint8Array(train.size);
          if (outcomes.attack) {
            const truth = JSON.parse(await readFile(join(store.dir(outcomes.attack.ref), 'truth.json'), 'utf8')) as PoisonTruth;
            for (const i of truth.poisoned) isPoisoned[i] = 1;
          }
          await mkdir(values.save, { recursive: true });
          const body = {
            dataset: `simclr-w${values.width}-e${epochs}-n${perClass}${values['encoder-batch'] ? `-b${values['encoder-batch']}` : ''}${values['encoder-lr'] ? `-lr${values['encoder-lr']}` : ''}`,
            attack: condition,
            condition: !attack ? 'clean' : isCleanLabel({ ...attack, seed: 0 }) ? 'disruptive' : 'non-disruptive',
            trial: Number(values.seed),
            labels: Array.from(train.labels),
            truth: Array.from(isPoisoned),
            rows: density.rows,
            cols: density.cols,
            density: Array.from(density.data),
            features: await (async () => {
              const f = await readMatrix(store.dir(outcomes.features.ref), 'features');
              return { rows: f.rows, cols: f.cols, data: Array.from(f.data) };
            })(),
          };
          await train.close();
          await writeFile(join(values.save, `${body.dataset}-${condition}.json`), JSON.stringify(body));
        }
      }
    }
  }
} finally {
  await rm(work, { recursive: true, force: true });
}
