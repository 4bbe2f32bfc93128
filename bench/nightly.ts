// Nightly audits, measured (issue 11): seven simulated nights on a growing CIFAR-10 set, audited
// under three encoder policies at the same CPU budget per night. Night 1 is a clean set of
// `--per-class` images per class; each later night adds 5% of that (new files, the same ids and
// bytes on every night after); on `--poison-night` a BadNets poison arrives with them: images of
// the other classes stamped with the 3x3 trigger and written as PNGs in the airplane folder, 10%
// of that night's set, and they stay in the set after. Policies:
//   scratch  SimCLR from random weights every night for `--epochs` (what a nightly audit did before)
//   warm     `warmStart: previous`: tonight's SimCLR continues last night's for `--epochs` more
//   reuse    night 1 as scratch; then `encoder: { kind: reuse, from: previous }` (no training,
//            features of unchanged samples copied)
// each at every `--widths` encoder width. Every night's dataset is an ImageFolder assembled under
// the store folder from the extracted CIFAR-10 JPEGs, and every policy has its own output folder
// (the lineage follows report.json there) and its own artifact store (no policy is served another
// one's cached night, so every wall time is the policy's own). The poison is files, not the
// pipeline's attack stage, so the report has no truth: TPR/FPR/relabel accuracy are computed here
// from cleansed.jsonl and this bench's own truth, matched by sample id.
//
// Resumable: a night whose row.json exists is read back, not run; an interrupted night runs again
// with the output folder reset to the previous night's outputs, so its lineage (and with it the
// encoder's key and checkpoint) is the same.
//
//   npm run bench -- nightly [--per-class 300] [--nights 7] [--poison-night 4] [--epochs 12] [--widths 8,16]
//                            [--policies scratch,warm,reuse] [--flow-epochs 5] [--seed 0]
//                            [--store .cache/bench-nightly] [--out bench/results/nightly-<date>.json]
import { copyFile, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { stringify } from 'yaml';
import { auditDataset } from '../activities/in-process.js';
import { createAttack } from '../attacks/index.js';
import { parsePipeline } from '../client/pipeline.js';
import { pathExists, publishDir } from '../data/files.js';
import { resolveSource } from '../data/sources.js';
import type { PoisonTruth } from '../data/types.js';
import type { AuditReport, CleansedEntry } from '../ml/audit-report.js';
import { cleansingMetrics } from '../ml/evaluate.js';
import { Rng } from '../ml/random.js';

const POLICIES = ['scratch', 'warm', 'reuse'] as const;
type Policy = (typeof POLICIES)[number];
/** Each night after the first adds this fraction of night 1's set (issue 11: "5% new images"). */
const GROWTH = 0.05;
/** Poisoned fraction of the set on the poison night (attacks.md's BadNets rate). */
const POISON_RATE = 0.1;
const TARGET = 'airplane';
/** CIFAR-10 images are 32x32. */
const SIZE = 32;
/** Outputs of an audit that the next night's lineage and diff read (report/ writeAuditOutputs). */
const OUTPUT_FILES = ['report.json', 'report.html', 'cleansed.jsonl'];

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    'per-class': { type: 'string', default: '300' },
    nights: { type: 'string', default: '7' },
    'poison-night': { type: 'string', default: '4' },
    epochs: { type: 'string', default: '12' },
    widths: { type: 'string', default: '8,16' },
    policies: { type: 'string', default: POLICIES.join(',') },
    // detection-scale's setting, where 300 per class and 12 epochs found the target.
    'flow-epochs': { type: 'string', default: '5' },
    seed: { type: 'string', default: '0' },
    store: { type: 'string', default: join('.cache', 'bench-nightly') },
    out: { type: 'string' },
  },
});
const int = (name: string, s: string, min: number): number => {
  const v = Number(s);
  if (!Number.isInteger(v) || v < min) throw new Error(`--${name}: expected an integer >= ${min}, got "${s}"`);
  return v;
};
const perClass = int('per-class', values['per-class'], 1);
const nights = int('nights', values.nights, 1);
const poisonNight = int('poison-night', values['poison-night'], 1);
const epochs = int('epochs', values.epochs, 1);
const flowEpochs = int('flow-epochs', values['flow-epochs'], 1);
const seed = int('seed', values.seed, 0);
const widths = values.widths.split(',').map((w) => int('widths', w, 1));
const policies = values.policies.split(',').map((p) => {
  if (!(POLICIES as readonly string[]).includes(p)) throw new Error(`--policies: unknown policy "${p}" (${POLICIES.join(', ')})`);
  return p as Policy;
});
/** New clean images per class each night after the first (at least one, so the set grows). */
const addPerClass = Math.max(1, Math.round(GROWTH * perClass));

const root = resolve(values.store);
/** The nights' datasets depend on these only (not on --nights, --epochs or the policies). */
const dataTag = `c${perClass}-a${addPerClass}-p${poisonNight}-s${seed}`;
const out = resolve(values.out ?? join('bench', 'results', `nightly-${new Date().toISOString().slice(0, 10)}.json`));

// ---- The nights' datasets ----------------------------------------------------------------------

/** What this bench knows about a night's set: its poisoned samples by id, with their true class. */
interface NightTruth {
  night: number;
  samples: number;
  poisoned: { id: string; sourceClass: number; sourceId: string }[];
}

interface SourceOrder {
  dir: string;
  classes: string[];
  files: string[][];
}
let source: Promise<SourceOrder> | undefined;
/** The source files of every class, each in one seeded order (clean draws from the front, poison from the back). */
function sourceOrder(): Promise<SourceOrder> {
  source ??= readSourceOrder();
  return source;
}
async function readSourceOrder(): Promise<SourceOrder> {
  // With only the bundled subset, a limit it cannot meet is refused here, by name.
  const need = perClass + (nights - 1) * addPerClass;
  const { spec, description } = await resolveSource({ format: 'cifar10', split: 'train' }, { limitPerClass: need });
  if (spec.format !== 'imagefolder')
    throw new Error(
      `nightly: the nights are assembled from CIFAR-10's JPEG files, but ${description ?? 'the CIFAR-10 source'} is ${spec.format}`,
    );
  const dir = spec.root;
  const classes = (await readdir(dir, { withFileTypes: true }))
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
  if (!classes.includes(TARGET)) throw new Error(`nightly: no ${TARGET} folder in ${dir}`);
  const files: string[][] = [];
  for (const [k, c] of classes.entries()) {
    const names = (await readdir(join(dir, c))).filter((f) => f.endsWith('.jpg')).sort();
    const order = new Rng(seed).fork(k).permutation(names.length);
    files.push(Array.from(order, (i) => names[i]));
  }
  return { dir, classes, files };
}

/** Poisoned samples of the poison night: round(N / 9) so that they are 10% of that night's set. */
function poisonPlan(classes: string[], files: string[][]): { sourceClass: number; file: string; id: string }[] {
  const target = classes.indexOf(TARGET);
  const clean = classes.length * (perClass + (poisonNight - 1) * addPerClass);
  const count = Math.round((POISON_RATE / (1 - POISON_RATE)) * clean);
  const sources = classes.map((_, k) => k).filter((k) => k !== target);
  const plan: { sourceClass: number; file: string; id: string }[] = [];
  for (let j = 0; j < count; j++) {
    const k = sources[j % sources.length];
    // From the back of the class's order, so the clean nights (from the front) never meet them.
    const file = files[k][files[k].length - 1 - Math.floor(j / sources.length)];
    plan.push({ sourceClass: k, file, id: `${TARGET}/n${poisonNight}-${String(j).padStart(5, '0')}.png` });
  }
  const used = perClass + (nights - 1) * addPerClass + Math.ceil(count / sources.length);
  for (const k of sources)
    if (used > files[k].length) throw new Error(`nightly: ${classes[k]} has ${files[k].length} images, ${used} needed`);
  return plan;
}

/** The stamped poison files, written once (PNG: lossless, so the 3x3 trigger survives). */
async function poisonPool(src: { dir: string; classes: string[] }, plan: ReturnType<typeof poisonPlan>): Promise<string> {
  const dir = join(root, 'datasets', dataTag, 'poison');
  if (await pathExists(dir)) return dir;
  const attack = await createAttack({ name: 'badnets', targetClass: src.classes.indexOf(TARGET), rate: POISON_RATE, seed }, SIZE);
  return publishDir(
    dir,
    async (tmp) => {
      await mkdir(join(tmp, TARGET));
      for (const [j, p] of plan.entries()) {
        const { data, info } = await sharp(join(src.dir, src.classes[p.sourceClass], p.file))
          .toColourspace('srgb')
          .removeAlpha()
          .raw()
          .toBuffer({ resolveWithObject: true });
        if (info.width !== SIZE || info.height !== SIZE || info.channels !== 3)
          throw new Error(`nightly: ${p.file} is ${info.width}x${info.height}x${info.channels}, expected ${SIZE}x${SIZE}x3`);
        const img = attack.applyTrain(new Uint8Array(data), SIZE, SIZE, j, new Rng(seed).fork(j));
        await sharp(Buffer.from(img), { raw: { width: SIZE, height: SIZE, channels: 3 } })
          .png()
          .toFile(join(tmp, p.id));
      }
      return dir;
    },
    { keepExisting: async () => dir, replace: false },
  );
}

/**
 * Night n's ImageFolder (built once, then read as it is: its files' paths and mtimes are the
 * ingest key) and its truth. Clean files are copies of the CIFAR-10 JPEGs under their own names,
 * so a sample has the same id and bytes on every night it is in.
 */
async function nightDataset(n: number): Promise<{ dir: string; truth: NightTruth }> {
  const src = await sourceOrder();
  const plan = poisonPlan(src.classes, src.files);
  const dir = join(root, 'datasets', dataTag, `night-${n}`);
  const poisoned = n >= poisonNight ? plan : [];
  const truth: NightTruth = {
    night: n,
    samples: src.classes.length * (perClass + (n - 1) * addPerClass) + poisoned.length,
    poisoned: poisoned.map((p) => ({ id: p.id, sourceClass: p.sourceClass, sourceId: `${src.classes[p.sourceClass]}/${p.file}` })),
  };
  if (await pathExists(dir)) return { dir, truth };
  const pool = poisoned.length ? await poisonPool(src, plan) : undefined;
  await publishDir(
    dir,
    async (tmp) => {
      for (const [k, c] of src.classes.entries()) {
        await mkdir(join(tmp, c));
        for (const f of src.files[k].slice(0, perClass + (n - 1) * addPerClass)) await copyFile(join(src.dir, c, f), join(tmp, c, f));
      }
      for (const p of poisoned) await copyFile(join(pool as string, p.id), join(tmp, p.id));
      return dir;
    },
    { keepExisting: async () => dir, replace: false },
  );
  // Beside the dataset, never in it (a file at its root is not a sample).
  await writeFile(`${dir}.truth.json`, JSON.stringify(truth, null, 1) + '\n');
  return { dir, truth };
}

// ---- One night of one policy ---------------------------------------------------------------------

export interface NightRow {
  night: number;
  policy: Policy;
  width: number;
  samples: number;
  poisoned: number;
  /** Wall time of the audit (every stage; the datasets are assembled beforehand). */
  seconds: number;
  encoderSeconds: number;
  /** SimCLR epochs behind tonight's encoder (report.json lineage, else this night's). */
  cumulativeEpochs: number;
  /** Reuse: samples sent through the encoder / rows copied from last night's features. */
  features?: { recomputed: number; reused: number };
  flagged: string[];
  /** From the poison night on: whether the target class is flagged. */
  targetFound?: boolean;
  /** Flagged classes that are not a target: any before the poison night, others after. */
  falseFlags: string[];
  tpr?: number;
  fpr?: number;
  relabelAccuracy?: number;
  /** Poisoned samples kept with the target label / poisoned samples. */
  poisonedKept?: number;
  backend: string;
  /** Stages served from the store (a resumed night: its times are not the night's cost). */
  cachedStages: string[];
  /** The encoder's lineage as report.json states it (why there was no parent, if none). */
  lineage?: AuditReport['lineage'];
}

function encoderFor(policy: Policy, width: number, night: number): Record<string, unknown> {
  if (policy === 'reuse' && night > 1) return { kind: 'reuse', from: 'previous' };
  return { kind: 'simclr', width, epochs, ...(policy === 'warm' ? { warmStart: 'previous' } : {}) };
}

async function runNight(policy: Policy, width: number, n: number): Promise<NightRow> {
  const base = join(root, 'runs', dataTag, `${policy}-w${width}-e${epochs}-f${flowEpochs}`);
  const done = join(base, 'nights', String(n));
  if (await pathExists(join(done, 'row.json'))) return JSON.parse(await readFile(join(done, 'row.json'), 'utf8')) as NightRow;

  const { dir, truth } = await nightDataset(n);
  // The output folder holds exactly last night's outputs, whether or not a run died after writing its own.
  const output = join(base, 'output');
  await rm(output, { recursive: true, force: true });
  await mkdir(output, { recursive: true });
  if (n > 1) for (const f of OUTPUT_FILES) await copyFile(join(base, 'nights', String(n - 1), f), join(output, f));

  const name = `nightly-${policy}-w${width}`;
  const file = join(base, `night-${n}.yaml`);
  const yaml = stringify({
    name,
    dataset: { format: 'imagefolder', root: dir, imageSize: SIZE, name: `cifar10-nightly-${dataTag}-night${n}` },
    audit: { seed, encoder: encoderFor(policy, width, n), flow: { epochs: flowEpochs }, retrain: false },
    output,
  });
  await writeFile(file, yaml);
  const pipeline = await parsePipeline(yaml, file);
  const t0 = performance.now();
  const { report, cleansed } = await auditDataset(pipeline, { store: join(base, 'store') });
  const seconds = (performance.now() - t0) / 1000;

  const row = rowOf(policy, width, n, truth, report, cleansed, seconds);
  await mkdir(done, { recursive: true });
  for (const f of OUTPUT_FILES) await copyFile(join(output, f), join(done, f));
  await writeFile(join(done, 'row.json'), JSON.stringify(row, null, 1) + '\n'); // last: the night is done
  return row;
}

function rowOf(
  policy: Policy,
  width: number,
  n: number,
  truth: NightTruth,
  report: AuditReport,
  cleansed: CleansedEntry[],
  seconds: number,
): NightRow {
  const target = report.dataset.classes.indexOf(TARGET);
  const flagged = report.classes.filter((c) => c.flagged);
  // The bench's truth in the manifest's order (cleansingMetrics counts by index), by sample id.
  const at = new Map(cleansed.map((e, i) => [e.id, i]));
  const poisonTruth: PoisonTruth = { attack: 'badnets', targetClass: target, poisoned: [], sourceLabels: [] };
  for (const p of truth.poisoned) {
    const i = at.get(p.id);
    if (i === undefined) throw new Error(`nightly: poisoned sample ${p.id} is not in night ${n}'s cleansed.jsonl`);
    poisonTruth.poisoned.push(i);
    poisonTruth.sourceLabels.push(p.sourceClass);
  }
  if (cleansed.length !== truth.samples)
    throw new Error(`nightly: night ${n} has ${cleansed.length} samples in cleansed.jsonl, ${truth.samples} planned`);
  const m = cleansingMetrics(
    cleansed,
    poisonTruth,
    flagged.map((c) => c.index),
  );
  const kept = poisonTruth.poisoned.filter((i) => cleansed[i].action === 'keep').length;
  const attacked = truth.poisoned.length > 0;
  const l = report.lineage;
  return {
    night: n,
    policy,
    width,
    samples: cleansed.length,
    poisoned: truth.poisoned.length,
    seconds,
    encoderSeconds: report.timings.encoder ?? 0,
    cumulativeEpochs: l?.cumulativeEpochs ?? (report.config.encoder.kind === 'simclr' ? report.config.encoder.epochs : 0),
    ...(l?.features ? { features: { recomputed: l.features.recomputed, reused: l.features.reused } } : {}),
    flagged: flagged.map((c) => c.name),
    ...(attacked ? { targetFound: flagged.some((c) => c.index === target) } : {}),
    falseFlags: flagged.filter((c) => !attacked || c.index !== target).map((c) => c.name),
    ...(m.tpr !== undefined ? { tpr: m.tpr } : {}),
    ...(m.fpr !== undefined ? { fpr: m.fpr } : {}),
    ...(m.relabelAccuracy !== undefined ? { relabelAccuracy: m.relabelAccuracy } : {}),
    ...(attacked ? { poisonedKept: kept / truth.poisoned.length } : {}),
    backend: report.backend,
    cachedStages: report.cachedStages ?? [],
    ...(l ? { lineage: l } : {}),
  };
}

// ---- The run ---------------------------------------------------------------------------------------

const rows: NightRow[] = [];
const started = performance.now();

async function save(): Promise<void> {
  const body = {
    bench: 'nightly',
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model },
    setting: {
      perClass,
      addPerClassPerNight: addPerClass,
      nights,
      poisonNight,
      poison: `badnets 3x3 (badnet_patch_32.png, upper-left) on other classes' images, as ${TARGET}, ${POISON_RATE * 100}% of night ${poisonNight}'s set`,
      epochsPerNight: epochs,
      widths,
      policies,
      flowEpochs,
      seed,
    },
    store: root,
    minutes: (performance.now() - started) / 60_000,
    rows,
  };
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, JSON.stringify(body, null, 2) + '\n');
}

const pct = (x?: number): string => (x === undefined ? '-' : (100 * x).toFixed(1));
console.log(
  `nightly: ${nights} nights x ${widths.length} widths x ${policies.length} policies; ${perClass}/class on night 1, +${addPerClass}/class a night, ` +
    `poison on night ${poisonNight}; ${epochs} SimCLR epochs a night; store ${root}`,
);
console.log(
  '| night | width | policy | samples (poisoned) | wall s | encoder s | cum. epochs | features recomputed | flagged | target | false flags | TPR % | FPR % | relabel acc. % | poisoned kept % |',
);
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
// Night by night, so an interrupted run has compared every policy on its first nights.
for (let n = 1; n <= nights; n++) {
  for (const width of widths) {
    for (const policy of policies) {
      const r = await runNight(policy, width, n);
      rows.push(r);
      console.log(
        `| ${r.night} | ${r.width} | ${r.policy} | ${r.samples} (${r.poisoned}) | ${r.seconds.toFixed(0)}${r.cachedStages.includes('encoder') ? '*' : ''} | ${r.encoderSeconds.toFixed(0)} | ${r.cumulativeEpochs} | ` +
          `${r.features ? `${r.features.recomputed} of ${r.features.recomputed + r.features.reused}` : '-'} | ${r.flagged.join(' ') || 'none'} | ` +
          `${r.targetFound === undefined ? '-' : r.targetFound ? 'found' : 'missed'} | ${r.falseFlags.join(' ') || 'none'} | ` +
          `${pct(r.tpr)} | ${pct(r.fpr)} | ${pct(r.relabelAccuracy)} | ${pct(r.poisonedKept)} |`,
      );
      await save();
    }
  }
}
if (rows.some((r) => r.cachedStages.includes('encoder')))
  console.log("* the encoder came from the store (a resumed night): that wall time is not the night's cost");
console.log(`wrote ${out} (${((performance.now() - started) / 60_000).toFixed(1)} min)`);
