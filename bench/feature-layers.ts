// Would features pooled from earlier stages of the SimCLR encoder, beside the backbone output,
// find more targets and relabel better? SimCLR trains the last stage to be invariant to crops and
// colour, which is what lets a patch or a faint blend pass unseen; earlier stages keep texture and
// colour statistics (the pixel floor relabels better than the backbone output: bench
// relabel-rules). Reads the audits a `bench matrix` run left in its store and, for every poisoned
// or clean set, redoes features -> per-class flows -> density -> detection -> relabelling with
// the stored encoder, for each feature variant:
//   s4        global average pool of the last stage (the audit's features: the baseline)
//   s3+s4     pools of stages 3 and 4, concatenated
//   s2+s3+s4  pools of stages 2, 3 and 4
//   s1+s2+s3+s4  pools of all four stages
//   <any of these> flip  the same with each row the mean over the image and its mirror (audit.features.flipAverage)
// Flows, detection and the split are the audit's own functions and settings (the matrix's flow
// epochs); the target is known for the relabel figures, as in bench relabel-rules. Relabel
// accuracy is over every poisoned sample, by the flows' argmax (the paper's) and by the shared-
// covariance Gaussians (the product's default) fitted on the rows the split keeps as clean.
// Each row names its encoder: a store holding several matrices of a seed gives each of their
// sets, and the summary table averages over all of them. With --pixel-components k, the shared
// Gaussians are also fitted with the images' k pixel components beside the features
// (audit.relabel.pixelComponents, ml/pixel-components.ts), on the same clean rows.
//
//   npm run bench -- feature-layers [--store .cache/bench-matrix] [--seeds 2] [--flow-epochs 10]
//                                   [--variants "s2+s3+s4,s2+s3+s4 flip"] [--pixel-components 64] [--json out.json]
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { readMatrix } from '../activities/io.js';
import { selectBackend } from '../backend/backend.js';
import { openDataset } from '../data/dataset.js';
import type { PoisonTruth } from '../data/types.js';
import { sharedGaussians } from '../ml/class-gaussians.js';
import { defaultAuditConfig, type ResNetStage } from '../ml/config.js';
import { densityMatrix, maxForeign } from '../ml/density.js';
import { detectTargets, knownVerdict } from '../ml/detect.js';
import { extractFeatures } from '../ml/features.js';
import { classMembers } from '../ml/flow.js';
import { trainFlowGroup } from '../ml/flow-group.js';
import { concatColumns, selectRows } from '../ml/matrix.js';
import { pixelComponents } from '../ml/pixel-components.js';
import { loadModel } from '../ml/model-io.js';
import { splitAndRelabel, type ForeignClassModel } from '../ml/relabel.js';
import { pooledStages } from '../ml/resnet.js';
import { poisonScores } from '../ml/score.js';
import { storedReports } from './lib/matrix-store.js';

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    store: { type: 'string', default: join('.cache', 'bench-matrix') },
    'flow-epochs': { type: 'string', default: '10' },
    /** Only the audits of these seeds (the store may hold several matrices). */
    seeds: { type: 'string' },
    /** Comma-separated variant names (default: the four stage sets, image alone). */
    variants: { type: 'string' },
    'pixel-components': { type: 'string' },
    json: { type: 'string' },
  },
});
const store = values.store;
const flowConfig = { ...defaultAuditConfig.flow, epochs: Number(values['flow-epochs']) };
const detection = defaultAuditConfig.detection;
const seeds = values.seeds?.split(',').map(Number);
const pixelK = values['pixel-components'] === undefined ? 0 : Number(values['pixel-components']);
if (!(Number.isInteger(pixelK) && pixelK >= 0)) throw new Error(`--pixel-components: "${values['pixel-components']}" is not a count`);

/** Stage sets: the stages whose global average pools are concatenated (ml/resnet.ts pooledStages). */
const STAGE_SETS: Record<string, ResNetStage[]> = {
  s4: [4],
  's3+s4': [3, 4],
  's2+s3+s4': [2, 3, 4],
  's1+s2+s3+s4': [1, 2, 3, 4],
};
/** A variant: a stage set, and whether the mirror is averaged in (`<stage set> flip`). */
interface Variant {
  stages: ResNetStage[];
  flipAverage: boolean;
}
function variantOf(name: string): Variant {
  const [set, flip, ...rest] = name.trim().split(' ');
  const stages = STAGE_SETS[set];
  if (!stages || (flip !== undefined && flip !== 'flip') || rest.length)
    throw new Error(`--variants: "${name}" is not one of ${Object.keys(STAGE_SETS).join(', ')}, optionally followed by " flip"`);
  return { stages, flipAverage: flip === 'flip' };
}
const VARIANTS: Record<string, Variant> = Object.fromEntries(
  (values.variants?.split(',') ?? Object.keys(STAGE_SETS)).map((name) => [name.trim(), variantOf(name)]),
);

interface Audit {
  attack?: string;
  dataset: string;
  encoder: string;
  seed: number;
  density: string;
  /** The features the audit itself computed: its stored density is the check of that variant. */
  features: Variant;
}

/** Report artifacts of every audit in the store, one per encoder (the defenses of a set share it). */
async function audits(): Promise<Audit[]> {
  const found = new Map<string, Audit>();
  for (const report of await storedReports(store)) {
    const { attack, ingest, encoder, density } = report.artifacts;
    if (!encoder || !density || !(attack || ingest)) continue;
    if (seeds && !seeds.includes(report.config?.seed ?? 0)) continue;
    found.set(encoder, {
      ...(attack ? { attack } : {}),
      dataset: join(attack ?? ingest!, 'dataset'),
      encoder,
      seed: report.config?.seed ?? 0,
      density,
      features: {
        stages: (report.config?.features?.stages ?? [4]) as ResNetStage[],
        flipAverage: report.config?.features?.flipAverage ?? false,
      },
    });
  }
  return [...found.values()];
}

interface Row {
  dataset: string;
  /** The stored encoder's artifact key (a store can hold several matrices of one seed: other encoders). */
  encoder: string;
  attack: string;
  target?: number;
  variant: string;
  dims: number;
  /** rank-z of the target (poisoned sets) and the lowest of the other classes. */
  targetZ?: number;
  lowestOtherZ: number;
  flagged: number[];
  targetFound?: boolean;
  /** Argmax-foreign-flow accuracy over every poisoned sample (poison-label sets). */
  relabelAccuracy?: number;
  /** The shared-covariance Gaussians' accuracy over every poisoned sample, fitted on the split's clean rows. */
  gaussianRelabelAccuracy?: number;
  /** The same with the images' pixel components beside the features (--pixel-components). */
  pixelGaussianRelabelAccuracy?: number;
  /** Poisoned samples kept with the target label by the split, the target told. */
  poisonedKept?: number;
}

await selectBackend('auto', 'training', () => {});
const rows: Row[] = [];
const list = await audits();
const started = Date.now();
for (const [done, a] of list.entries()) {
  const truth = a.attack ? (JSON.parse(await readFile(join(store, a.attack, 'truth.json'), 'utf8')) as PoisonTruth) : undefined;
  const data = await openDataset(join(store, a.dataset));
  const encoder = await loadModel(join(store, a.encoder, 'model'));
  try {
    const pixels = pixelK ? await pixelComponents(data, pixelK) : undefined;
    const labels = data.labels;
    const classes = data.classes.length;
    for (const [variant, { stages, flipAverage }] of Object.entries(VARIANTS)) {
      console.error(
        `feature-layers: ${done + 1}/${list.length} ${truth?.attack ?? 'clean'} ${variant} (${((Date.now() - started) / 1000).toFixed(0)} s)`,
      );
      const view = pooledStages(encoder, stages);
      const features = await extractFeatures(view, data, { flipAverage });
      const members = Array.from({ length: classes }, (_, y) => ({
        features: selectRows(features, classMembers(labels, y)),
        seed: a.seed + y,
      }));
      const { flows } = await trainFlowGroup(members, flowConfig);
      const density = densityMatrix(flows, features);
      flows.forEach((f) => f.dispose());
      if (flipAverage === a.features.flipAverage && stages.join() === a.features.stages.join()) {
        // The audit's own features must give the audit's own density, or the comparison is of something else.
        const stored = await readMatrix(join(store, a.density), 'density');
        let worst = 0;
        stored.data.forEach((v, k) => (worst = Math.max(worst, Math.abs(v - density.data[k]))));
        console.error(`  ${variant} density vs the audit's: max |difference| ${worst.toExponential(2)} nats`);
      }
      const detections = detectTargets(density, labels, detection);
      const t = truth?.targetClass;
      const z = detections.map((d) => d.sNDNormalized);
      const row: Row = {
        dataset: data.manifest.name,
        encoder: a.encoder,
        attack: truth?.attack ?? 'clean',
        ...(t !== undefined ? { target: t } : {}),
        variant,
        dims: features.cols,
        lowestOtherZ: Math.min(...z.filter((_, y) => y !== t)),
        flagged: detections.filter((d) => d.kind !== 'clean').map((d) => d.index),
      };
      if (truth && t !== undefined) {
        row.targetZ = z[t];
        row.targetFound = detections[t].kind !== 'clean';
        const P = truth.poisoned;
        if (P.length && truth.sourceLabels.some((s) => s !== t)) {
          let right = 0;
          P.forEach((i, k) => {
            if (maxForeign(density.data, i * classes, classes, t).index === truth.sourceLabels[k]) right++;
          });
          row.relabelAccuracy = right / P.length;
          const scores = poisonScores(density, labels, defaultAuditConfig.relabel.scoreReference);
          let gaussians: ForeignClassModel | undefined;
          let clean: readonly number[] = [];
          const entries = splitAndRelabel(
            data.ids,
            labels,
            density,
            scores,
            [knownVerdict(t, 'non-disruptive')],
            defaultAuditConfig.relabel,
            undefined,
            (rows) => (gaussians = sharedGaussians(features, labels, (clean = rows), classes)),
          );
          row.poisonedKept = P.filter((i) => entries[i].action === 'keep').length / P.length;
          // The fraction of the poisoned samples a model sends back to their source class.
          const sourceAccuracy = (model: ForeignClassModel) =>
            model.choose(P, t).filter((y, k) => y === truth.sourceLabels[k]).length / P.length;
          if (gaussians) row.gaussianRelabelAccuracy = sourceAccuracy(gaussians);
          if (gaussians && pixels)
            row.pixelGaussianRelabelAccuracy = sourceAccuracy(sharedGaussians(concatColumns(features, pixels), labels, clean, classes));
        }
      }
      rows.push(row);
      console.error(`  ${JSON.stringify(row)}`);
    }
  } finally {
    encoder.dispose();
    await data.close();
  }
}

const f2 = (x: number | undefined) => (x === undefined ? '-' : x.toFixed(2));
const pct = (x: number | undefined) => (x === undefined ? '-' : (100 * x).toFixed(1));
console.log(
  '| dataset | encoder | attack | variant | dims | target rank-z | lowest other | flagged | relabel acc. %: flows | shared Gaussians | with pixels | poisoned kept % |',
);
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows)
  console.log(
    `| ${r.dataset} | ${r.encoder.slice(0, 12)} | ${r.attack} | ${r.variant} | ${r.dims} | ${f2(r.targetZ)} | ${f2(r.lowestOtherZ)} | ${r.flagged.join(' ') || 'none'} | ${pct(r.relabelAccuracy)} | ${pct(r.gaussianRelabelAccuracy)} | ${pct(r.pixelGaussianRelabelAccuracy)} | ${pct(r.poisonedKept)} |`,
  );
console.log(
  '\n| variant | targets found | false flags (sets) | mean target rank-z | relabel acc. % (per poisoned set): flows | shared Gaussians | with pixels | poisoned kept % |',
);
console.log('|---|---|---|---|---|---|---|---|');
for (const variant of Object.keys(VARIANTS)) {
  const rs = rows.filter((r) => r.variant === variant);
  const targets = rs.filter((r) => r.targetZ !== undefined && r.relabelAccuracy !== undefined);
  const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / Math.max(1, xs.length);
  const falseSets = rs.filter((r) => r.flagged.some((y) => y !== r.target)).length;
  console.log(
    `| ${variant} | ${targets.filter((r) => r.targetFound).length} of ${targets.length} | ${falseSets} of ${rs.length} | ` +
      `${f2(mean(targets.map((r) => r.targetZ!)))} | ${pct(mean(targets.map((r) => r.relabelAccuracy!)))} | ` +
      `${pct(mean(targets.map((r) => r.gaussianRelabelAccuracy ?? NaN)))} | ${pixelK ? pct(mean(targets.map((r) => r.pixelGaussianRelabelAccuracy ?? NaN))) : '-'} | ${pct(mean(targets.map((r) => r.poisonedKept!)))} |`,
  );
}
if (values.json) {
  await writeFile(
    values.json,
    JSON.stringify({ bench: 'feature-layers', date: new Date().toISOString(), store, flowConfig, pixelComponents: pixelK, rows }, null, 1) +
      '\n',
  );
  console.log(`wrote ${values.json}`);
}
tf.disposeVariables();
