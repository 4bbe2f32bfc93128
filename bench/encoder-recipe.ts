// Which SimCLR recipe gives the best features for the CPU time an audit can afford? The matrix
// trains its encoder for 12 epochs on 3,000 images at the paper's Adam lr (3e-4, tuned for 200
// epochs): about 300 optimizer steps. Every figure the matrix misses (relabel accuracy under
// the pixel floor, SIG and LC invisible) traces back to the encoder, so this bench asks, on a
// clean CIFAR-10 subset, how well each recipe's features (the audit's, encoder stages 2-4
// pooled) tell the classes apart: a shared-covariance Gaussian per class (the relabelling model,
// ml/class-gaussians.ts) fitted on the training features, scored on the held-out test images.
// The same classifier on the 32 leading principal components of the raw pixels is the floor.
// Each recipe is also scored with flip-averaged features (audit.features.flipAverage: each row the
// mean over the image and its mirror), on the same encoder.
// Each recipe is a real audit through the DAG (in-process executor, its own artifact store), so
// the clean set's verdict (nothing may be flagged) comes with it, and a rerun is a cache hit.
//
//   npm run bench -- encoder-recipe [--per-class 300] [--test-per-class 100] [--width 8] [--epochs 12]
//                                   [--recipes "lr=3e-4,batch=128;lr=1e-3,batch=64"] [--seed 2]
//                                   [--store .cache/bench-recipe] [--json out.json]
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { auditDataset } from '../activities/in-process.js';
import { selectBackend } from '../backend/backend.js';
import { parsePipeline } from '../client/pipeline.js';
import { openDataset, type ShardedDataset } from '../data/dataset.js';
import { sharedGaussians } from '../ml/class-gaussians.js';
import { defaultAuditConfig, defaultSimclrEncoder } from '../ml/config.js';
import { principalComponents, projectRows } from '../ml/defenses/pca.js';
import { extractFeatures } from '../ml/features.js';
import { matrix, type Matrix } from '../ml/matrix.js';
import { loadModel } from '../ml/model-io.js';
import { pooledStages } from '../ml/resnet.js';
import { pixelRows } from './lib/pixels.js';

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    'per-class': { type: 'string', default: '300' },
    'test-per-class': { type: 'string', default: '100' },
    width: { type: 'string', default: '8' },
    epochs: { type: 'string', default: '12' },
    /** Recipes separated by ';', each `key=value` pairs separated by ',': lr, batch, temperature, epochs. */
    recipes: {
      type: 'string',
      default: 'lr=3e-4,batch=128;lr=1e-3,batch=128;lr=3e-3,batch=128;lr=3e-4,batch=64;lr=1e-3,batch=64;lr=1e-3,batch=64,temperature=0.2',
    },
    seed: { type: 'string', default: '2' },
    store: { type: 'string', default: join('.cache', 'bench-recipe') },
    json: { type: 'string' },
  },
});

interface Recipe {
  lr: number;
  batch: number;
  temperature: number;
  epochs: number;
}

function parseRecipe(text: string): Recipe {
  // The paper's lr and temperature; the matrix's batch.
  const r: Recipe = {
    lr: defaultSimclrEncoder.lr,
    batch: 128,
    temperature: defaultSimclrEncoder.temperature,
    epochs: Number(values.epochs),
  };
  for (const pair of text.split(',')) {
    const [key, value] = pair.split('=');
    const v = Number(value);
    if (!(key in r) || !(v > 0)) throw new Error(`--recipes: "${pair}" in "${text}" is not lr|batch|temperature|epochs=<positive number>`);
    r[key as keyof Recipe] = v;
  }
  return r;
}
const recipes = values.recipes.split(';').map(parseRecipe);
const perClass = Number(values['per-class']);
const testPerClass = Number(values['test-per-class']);
const width = Number(values.width);
const seed = Number(values.seed);
const stages = defaultAuditConfig.features.stages;
const PIXEL_COMPONENTS = 32;
const store = resolve(values.store);
const work = await mkdtemp(join(tmpdir(), 'bench-recipe-'));

/**
 * Accuracy on `test` of the shared-covariance Gaussians fitted on `train` (the relabelling
 * model). The model names a class other than the asked one, so the test rows are asked as an
 * extra class that has no rows to fit: every real class is a candidate.
 */
function gaussianAccuracy(train: Matrix, trainLabels: Int32Array, test: Matrix, testLabels: Int32Array, classes: number): number {
  const d = train.cols;
  const both = matrix(train.rows + test.rows, d);
  both.data.set(train.data, 0);
  both.data.set(test.data, train.rows * d);
  const labels = new Int32Array(both.rows).fill(classes);
  labels.set(trainLabels, 0);
  const fit = Array.from({ length: train.rows }, (_, i) => i);
  const asked = Array.from({ length: test.rows }, (_, i) => train.rows + i);
  const chosen = sharedGaussians(both, labels, fit, classes + 1).choose(asked, classes);
  return chosen.filter((y, k) => y === testLabels[k]).length / test.rows;
}

/** The floor: the same classifier on the leading principal components of the training pixels. */
async function pixelFloor(train: ShardedDataset, test: ShardedDataset): Promise<number> {
  const [x, y] = [await pixelRows(train), await pixelRows(test)];
  const rows = (m: Matrix) => Array.from({ length: m.rows }, (_, i) => i);
  const pcs = principalComponents(x, rows(x), PIXEL_COMPONENTS);
  const project = (m: Matrix): Matrix => ({
    rows: m.rows,
    cols: PIXEL_COMPONENTS,
    data: Float32Array.from(projectRows(m, rows(m), pcs.mean, pcs.directions, PIXEL_COMPONENTS)),
  });
  return gaussianAccuracy(project(x), train.labels, project(y), test.labels, train.classes.length);
}

interface Row extends Recipe {
  steps: number;
  /** Wall seconds of the encoder stage (undefined: a cache hit of an earlier run). */
  encoderSeconds?: number;
  finalLoss?: number;
  testAccuracy: number;
  /** The same with every feature row the mean over the image and its mirror (features.flipAverage). */
  flipTestAccuracy: number;
  trainAccuracy: number;
  flagged: string[];
  lowestRankZ: number;
}

await selectBackend('auto', 'training', () => {});
const rows: Row[] = [];
let floor: number | undefined;
for (const r of recipes) {
  const name = `recipe-lr${r.lr}-b${r.batch}-t${r.temperature}-e${r.epochs}`;
  const pipeline = await parsePipeline(
    stringify({
      name,
      dataset: { format: 'cifar10', split: 'train', imageSize: 32, limitPerClass: perClass, name: `cifar10-${perClass}` },
      testSet: { format: 'cifar10', split: 'test', limitPerClass: testPerClass },
      audit: {
        seed,
        encoder: { kind: 'simclr', width, epochs: r.epochs, batchSize: r.batch, lr: r.lr, temperature: r.temperature },
        flow: { epochs: 10 },
        retrain: false,
      },
      output: join(work, 'out', name),
    }),
    join(work, `${name}.yaml`),
  );
  console.error(`encoder-recipe: ${name}`);
  const { report, outcomes, store: artifacts } = await auditDataset(pipeline, { store });
  const train = await openDataset(join(artifacts.dir(outcomes.ingest.ref), 'dataset'));
  const test = await openDataset(join(artifacts.dir(outcomes['ingest-test'].ref), 'dataset'));
  const encoder = await loadModel(join(artifacts.dir(outcomes.encoder.ref), 'model'));
  try {
    const view = pooledStages(encoder, stages);
    const [fTrain, fTest] = [await extractFeatures(view, train), await extractFeatures(view, test)];
    const flip = { flipAverage: true };
    const [gTrain, gTest] = [await extractFeatures(view, train, flip), await extractFeatures(view, test, flip)];
    const classes = train.classes.length;
    floor ??= await pixelFloor(train, test);
    // The encoder stage states its last epoch's loss in its figure ("loss 4.1234 after 12 epochs").
    const finalLoss = /^loss ([\d.]+)/.exec(outcomes.encoder.info.figure)?.[1];
    const row: Row = {
      ...r,
      steps: r.epochs * Math.ceil(train.size / r.batch),
      ...(outcomes.encoder.cached ? {} : { encoderSeconds: outcomes.encoder.seconds }),
      ...(finalLoss ? { finalLoss: Number(finalLoss) } : {}),
      testAccuracy: gaussianAccuracy(fTrain, train.labels, fTest, test.labels, classes),
      flipTestAccuracy: gaussianAccuracy(gTrain, train.labels, gTest, test.labels, classes),
      trainAccuracy: gaussianAccuracy(fTrain, train.labels, fTrain, train.labels, classes),
      flagged: report.classes.filter((k) => k.kind !== 'clean').map((k) => k.name),
      lowestRankZ: Math.min(...report.classes.map((k) => k.sNDNormalized)),
    };
    rows.push(row);
    console.error(`  ${JSON.stringify(row)}`);
  } finally {
    encoder.dispose();
    await Promise.all([train.close(), test.close()]);
  }
}

const pct = (x: number) => (100 * x).toFixed(1);
console.log(
  `\nCIFAR-10 ${perClass} per class (test ${testPerClass}), SimCLR ResNet-18 width ${width}, features: stages ${stages.join(', ')} pooled; seed ${seed}`,
);
console.log(`pixel floor (shared-covariance Gaussians on ${PIXEL_COMPONENTS} principal components): test accuracy ${pct(floor ?? NaN)}%\n`);
console.log(
  '| lr | batch | temperature | epochs | Adam steps | encoder s | final loss | test acc. % | flip-averaged % | train acc. % | flagged (clean set) | lowest rank-z |',
);
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows)
  console.log(
    `| ${r.lr} | ${r.batch} | ${r.temperature} | ${r.epochs} | ${r.steps} | ${r.encoderSeconds?.toFixed(0) ?? 'cached'} | ${r.finalLoss?.toFixed(3) ?? '-'} | ` +
      `${pct(r.testAccuracy)} | ${pct(r.flipTestAccuracy)} | ${pct(r.trainAccuracy)} | ${r.flagged.join(' ') || 'none'} | ${r.lowestRankZ.toFixed(2)} |`,
  );
if (values.json) {
  const body = {
    bench: 'encoder-recipe',
    date: new Date().toISOString(),
    perClass,
    testPerClass,
    width,
    seed,
    stages,
    pixelFloor: floor,
    rows,
  };
  await writeFile(values.json, JSON.stringify(body, null, 2) + '\n');
  console.log(`wrote ${values.json}`);
}
