// The benchmarks' poisoning protocol (../shared/docs/attacks.md) and the lazy views that apply
// a trigger when pixels are read, so a poisoned copy of a dataset costs no extra memory.
import { Rng } from '../ml/random.js';
import type { ImageSource, PoisonTruth } from '../data/types.js';
import { createAdapBlend, createAdapPatch } from './adaptive.js';
import { createBadnets } from './badnets.js';
import { createBlend } from './blend.js';
import { createIssba } from './issba.js';
import { createLc } from './lc.js';
import { createSig } from './sig.js';
import { createWanet } from './wanet.js';
import type { Attack, AttackConfig, AttackContext } from './types.js';

// Independent random streams derived from the attack seed (see streamRng).
const STREAM_SHUFFLE = 1;
const STREAM_TRIGGER = 2;
const STREAM_TRAIN_SAMPLE = 3;
const STREAM_TEST_SAMPLE = 4;

/**
 * A random stream fixed by (seed, stream, index) alone, so that a sample's trigger is the same
 * whatever order or batch it is read in.
 */
function streamRng(seed: number, stream: number, index = 0): Rng {
  return new Rng(seed).fork(stream).fork(index);
}

/**
 * Attack registry: name -> transforms, with attacks.md's defaults for omitted fields. LC and
 * ISSBA train a model on `ctx.clean` (see AttackContext); without it LC still has its test-time
 * trigger, and ISSBA needs `ctx.modelDir`.
 */
export async function createAttack(cfg: AttackConfig, imageSize: number, ctx: AttackContext = {}): Promise<Attack> {
  if (!Number.isInteger(imageSize) || imageSize < 1) throw new Error(`attack: bad image size ${imageSize}`);
  const triggerRng = streamRng(cfg.seed, STREAM_TRIGGER);
  switch (cfg.name) {
    case 'badnets':
      return createBadnets(cfg, imageSize);
    case 'blend':
      return createBlend(cfg, imageSize, triggerRng);
    case 'wanet':
      return createWanet(cfg, imageSize, triggerRng);
    case 'lc':
      return createLc(cfg, imageSize, ctx, triggerRng.int(2 ** 31));
    case 'sig':
      return createSig(cfg, imageSize);
    case 'issba':
      return createIssba(cfg, imageSize, ctx, triggerRng);
    case 'adap-patch':
      return createAdapPatch(cfg, imageSize);
    case 'adap-blend':
      return createAdapBlend(cfg, imageSize);
    default: {
      const name: never = cfg;
      throw new Error(`unknown attack ${JSON.stringify((name as { name: unknown }).name)}`);
    }
  }
}

/** Cover fraction of the whole set when the config leaves it out: WaNet's noise mode uses
 *  0.2 x the poisoned count, Adap-* as many regularisation samples as payload samples (poison
 *  and cover rate 0.01 in attacks.md); the other attacks use no covers. */
function defaultCoverRate(cfg: AttackConfig): number {
  if (cfg.name === 'wanet') return 0.2 * cfg.rate;
  if (cfg.name === 'adap-patch' || cfg.name === 'adap-blend') return cfg.rate;
  return 0;
}

/** Clean-label attacks poison samples of y_T itself and keep every label. */
export function isCleanLabel(cfg: AttackConfig): boolean {
  return cfg.name === 'lc' || cfg.name === 'sig';
}

/**
 * Which samples are poisoned and which are covers. Seeded shuffle of all indices; samples
 * already labelled y_T are skipped (relabelling them would change nothing), except by a
 * clean-label attack, which takes only those; the first round(rate * N) candidates are
 * poisoned, the next round(coverRate * N) are covers.
 */
function choosePoisoned(labels: Int32Array, cfg: AttackConfig): { poisoned: number[]; cover: number[] } {
  const n = labels.length;
  const coverRate = cfg.coverRate ?? defaultCoverRate(cfg);
  for (const [k, v] of [
    ['rate', cfg.rate],
    ['coverRate', coverRate],
  ] as const) {
    if (!(v >= 0 && v <= 1)) throw new Error(`attack ${cfg.name}: ${k} must be in [0, 1], got ${v}`);
  }
  const nPoison = Math.round(cfg.rate * n);
  const nCover = Math.round(coverRate * n);
  const order = streamRng(cfg.seed, STREAM_SHUFFLE).permutation(n);
  const cleanLabel = isCleanLabel(cfg);
  if (cleanLabel && nCover > 0) throw new Error(`attack ${cfg.name}: a clean-label attack has no covers (coverRate ${coverRate})`);
  const candidates: number[] = [];
  for (const i of order) if ((labels[i] === cfg.targetClass) === cleanLabel) candidates.push(i);
  if (nPoison + nCover > candidates.length) {
    throw new Error(
      `attack ${cfg.name}: ${nPoison} poisoned + ${nCover} covers requested but only ${candidates.length} samples are ${cleanLabel ? '' : 'not '}of target class ${cfg.targetClass}`,
    );
  }
  return { poisoned: candidates.slice(0, nPoison), cover: candidates.slice(nPoison, nPoison + nCover) };
}

type Transform = (img: Uint8Array, index: number) => Uint8Array;

/**
 * A view of `base` with other labels and a per-sample transform applied when pixels are read.
 * `indexMap[i]` is the base index of sample i (identity when absent).
 */
export class TransformedImages implements ImageSource {
  readonly classes: readonly string[];
  readonly height: number;
  readonly width: number;
  readonly size: number;
  readonly ids: readonly string[];

  constructor(
    readonly base: ImageSource,
    readonly labels: Int32Array,
    private readonly transform: (index: number) => Transform | undefined,
    private readonly indexMap?: Int32Array,
  ) {
    this.classes = base.classes;
    this.height = base.height;
    this.width = base.width;
    this.size = labels.length;
    this.ids = indexMap ? Array.from(indexMap, (i) => base.ids[i]) : base.ids;
    if (indexMap && indexMap.length !== labels.length) throw new Error('TransformedImages: labels and indexMap differ in length');
    if (!indexMap && labels.length !== base.size) throw new Error('TransformedImages: labels do not match the base set');
  }

  async readImages(indices: ArrayLike<number>): Promise<Uint8Array> {
    const baseIdx = new Int32Array(indices.length);
    for (let j = 0; j < indices.length; j++) {
      const i = indices[j];
      if (!(Number.isInteger(i) && i >= 0 && i < this.size)) throw new RangeError(`sample index ${i} outside 0..${this.size - 1}`);
      baseIdx[j] = this.indexMap ? this.indexMap[i] : i;
    }
    // A copy: the base may hand out views of its own storage, which must stay clean.
    const out = (await this.base.readImages(baseIdx)).slice();
    const px = this.height * this.width * 3;
    for (let j = 0; j < indices.length; j++) {
      const f = this.transform(indices[j]);
      if (f) out.set(f(out.subarray(j * px, (j + 1) * px), indices[j]), j * px);
    }
    return out;
  }
}

/** The poisoned training set: same ids and order as `clean`, poisoned samples relabelled to y_T. */
export class PoisonedImages extends TransformedImages {
  constructor(
    readonly clean: ImageSource,
    labels: Int32Array,
    transform: (index: number) => Transform | undefined,
  ) {
    super(clean, labels, transform);
  }
}

function checkSquare(src: ImageSource, what: string): number {
  if (src.height !== src.width) throw new Error(`${what}: attacks need square images, got ${src.width}x${src.height}`);
  return src.height;
}

function checkTarget(src: ImageSource, targetClass: number, what: string): void {
  if (!(Number.isInteger(targetClass) && targetClass >= 0 && targetClass < src.classes.length)) {
    throw new Error(`${what}: target class ${targetClass} outside 0..${src.classes.length - 1}`);
  }
}

/**
 * Poison `clean` by the protocol of attacks.md; returns a lazy view and the ground truth. For a
 * clean-label attack (LC) the poisoned samples are of y_T and keep their label, so their
 * source labels are y_T too. The attack is created with `clean` and the chosen samples (LC
 * perturbs them, ISSBA trains its encoder): call its `dispose` when done with the view.
 */
export async function poisonDataset(
  clean: ImageSource,
  cfg: AttackConfig,
  ctx: Pick<AttackContext, 'signal' | 'log'> = {},
): Promise<{ poisoned: PoisonedImages; truth: PoisonTruth; attack: Attack }> {
  const size = checkSquare(clean, `attack ${cfg.name}`);
  checkTarget(clean, cfg.targetClass, `attack ${cfg.name}`);
  const { poisoned, cover } = choosePoisoned(clean.labels, cfg);
  const attack = await createAttack(cfg, size, { ...ctx, clean, poisoned });
  const labels = clean.labels.slice();
  const role = new Int8Array(clean.size); // 1 poisoned, 2 cover
  for (const i of poisoned) {
    labels[i] = cfg.targetClass;
    role[i] = 1;
  }
  for (const i of cover) role[i] = 2;
  const train: Transform = (img, i) => attack.applyTrain(img, size, size, i, streamRng(cfg.seed, STREAM_TRAIN_SAMPLE, i));
  const coverFn: Transform = (img, i) =>
    (attack.applyCover ?? attack.applyTrain)(img, size, size, i, streamRng(cfg.seed, STREAM_TRAIN_SAMPLE, i));
  const view = new PoisonedImages(clean, labels, (i) => (role[i] === 1 ? train : role[i] === 2 ? coverFn : undefined));
  const truth: PoisonTruth = {
    attack: cfg.name,
    targetClass: cfg.targetClass,
    poisoned,
    sourceLabels: poisoned.map((i) => clean.labels[i]),
  };
  if (cover.length) truth.cover = cover;
  return { poisoned: view, truth, attack };
}

/**
 * The ASR test set: every test image whose label is not y_T, with the test-time trigger and
 * label y_T. Ids are those of the chosen test images.
 */
export async function triggeredTestSet(test: ImageSource, attack: Attack, targetClass: number, seed: number): Promise<TransformedImages> {
  const size = checkSquare(test, `attack ${attack.name}`);
  checkTarget(test, targetClass, `attack ${attack.name}`);
  const keep: number[] = [];
  for (let i = 0; i < test.size; i++) if (test.labels[i] !== targetClass) keep.push(i);
  const indexMap = Int32Array.from(keep);
  const labels = new Int32Array(keep.length).fill(targetClass);
  const trigger: Transform = (img, i) => attack.applyTest(img, size, size, streamRng(seed, STREAM_TEST_SAMPLE, i));
  return new TransformedImages(test, labels, () => trigger, indexMap);
}
