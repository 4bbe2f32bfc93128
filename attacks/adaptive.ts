// Adap-Patch and Adap-Blend (Qi et al. 2023, "Revisiting the assumption of latent separability
// for backdoor defenses"). Two kinds of "conservatism" keep the poisoned samples' latent
// representations close to the clean ones, which defeats defenses that cluster latents:
// - regularisation samples: covers, triggered but keeping their true label, alongside the payload
//   samples (triggered, relabelled to y_T); poisonDataset picks both, by default as many covers
//   as payload samples (attacks.md: poison rate 0.01, cover rate 0.01);
// - a diversified trigger: each training image carries only part of it (one of four patches,
//   or half of a blend trigger's pieces), the test images the whole of it at full strength.
// Numbers follow attacks.md (the backdoor-toolbox settings of the paper's CIFAR-10 runs).
import type { Rng } from '../ml/random.js';
import { checkImage, type AdapBlendConfig, type AdapPatchConfig, type Attack } from './types.js';
import { loadTrigger, type Trigger } from './triggers.js';

/** One trigger piece: pattern + mask over the whole image, blended at `alpha` where the mask is set. */
export interface TriggerPiece {
  /** HWC pattern, image-sized. */
  pattern: Uint8Array;
  /** HW mask, 1 where the piece applies. */
  mask: Uint8Array;
  alpha: number;
}

/** x + alpha * mask * (t - x), for each piece in turn (the toolbox's order of application), rounded to 8 bits. */
export function blendPieces(img: Uint8Array, pieces: readonly TriggerPiece[]): Uint8Array {
  const px = img.length / 3;
  const acc = Float64Array.from(img);
  for (const p of pieces) {
    for (let q = 0; q < px; q++) {
      if (!p.mask[q]) continue;
      for (let c = 0; c < 3; c++) acc[q * 3 + c] += p.alpha * (p.pattern[q * 3 + c] - acc[q * 3 + c]);
    }
  }
  const out = new Uint8Array(img.length);
  for (let i = 0; i < out.length; i++) out[i] = Math.round(acc[i]);
  return out;
}

function piece(t: Trigger, alpha: number): TriggerPiece {
  return { pattern: t.pattern, mask: t.mask, alpha };
}

/** Poisoning-time triggers of Adap-Patch (attacks.md): file and blend weight. */
export const ADAP_PATCH_TRAIN: readonly { file: string; alpha: number }[] = [
  { file: 'phoenix_corner_32.png', alpha: 0.5 },
  { file: 'firefox_corner_32.png', alpha: 0.2 },
  { file: 'badnet_patch4_32.png', alpha: 0.5 },
  { file: 'trojan_square_32.png', alpha: 0.3 },
];

/** Test-time triggers of Adap-Patch: a stronger combination, at full strength. */
export const ADAP_PATCH_TEST: readonly { file: string; alpha: number }[] = [
  { file: 'phoenix_corner2_32.png', alpha: 1 },
  { file: 'badnet_patch4_dup_32.png', alpha: 1 },
];

/**
 * Adap-Patch. Each payload or regularisation image gets one of the four training triggers,
 * drawn from its own random stream (the toolbox deals them out in equal blocks; a draw per
 * sample keeps a sample's trigger independent of which others are poisoned).
 */
export async function createAdapPatch(
  _cfg: AdapPatchConfig,
  imageSize: number,
): Promise<Attack & { trainPieces: readonly TriggerPiece[] }> {
  const load = async (list: readonly { file: string; alpha: number }[]) =>
    Promise.all(list.map(async (t) => piece(await loadTrigger(t.file, imageSize), t.alpha)));
  const train = await load(ADAP_PATCH_TRAIN);
  const test = await load(ADAP_PATCH_TEST);
  const poison = (img: Uint8Array, h: number, w: number, rng: Rng) => {
    checkImage('adap-patch', img, h, w, imageSize);
    return blendPieces(img, [train[rng.int(train.length)]]);
  };
  return {
    name: 'adap-patch',
    trainPieces: train,
    applyTrain: (img, h, w, _index, rng) => poison(img, h, w, rng),
    applyCover: (img, h, w, _index, rng) => poison(img, h, w, rng),
    applyTest(img, h, w) {
      checkImage('adap-patch', img, h, w, imageSize);
      return blendPieces(img, test);
    },
  };
}

/** The pieces of a grid x grid split of the image: piece k covers row k / grid, column k % grid. */
export function gridPieces(t: Trigger, size: number, pieces: number, alpha: number): TriggerPiece[] {
  const grid = Math.round(Math.sqrt(pieces));
  if (grid * grid !== pieces || grid < 1) throw new Error(`adap-blend: pieces must be a square number, got ${pieces}`);
  if (size % grid !== 0) throw new Error(`adap-blend: a ${grid}x${grid} grid does not divide a ${size}x${size} image`);
  const step = size / grid;
  return Array.from({ length: pieces }, (_, k) => {
    const mask = new Uint8Array(size * size);
    const top = Math.floor(k / grid) * step;
    const left = (k % grid) * step;
    for (let y = top; y < top + step; y++) for (let x = left; x < left + step; x++) mask[y * size + x] = t.mask[y * size + x];
    return { pattern: t.pattern, mask, alpha };
  });
}

/**
 * Adap-Blend. Training images blend round(pieceRate * pieces) randomly chosen pieces of the
 * trigger at alpha (0.15); test images blend the whole trigger at testAlpha (0.2).
 */
export async function createAdapBlend(
  cfg: AdapBlendConfig,
  imageSize: number,
): Promise<Attack & { trainPieces: readonly TriggerPiece[]; chosenPieces: (rng: Rng) => number[] }> {
  const alpha = cfg.alpha ?? 0.15;
  const testAlpha = cfg.testAlpha ?? 0.2;
  const pieces = cfg.pieces ?? 16;
  const pieceRate = cfg.pieceRate ?? 0.5;
  for (const [k, v] of [
    ['alpha', alpha],
    ['testAlpha', testAlpha],
  ] as const) {
    if (!(v > 0 && v <= 1)) throw new Error(`adap-blend: ${k} must be in (0, 1], got ${v}`);
  }
  const used = Math.round(pieceRate * pieces);
  if (!(used >= 1 && used < pieces)) {
    throw new Error(`adap-blend: pieceRate ${pieceRate} of ${pieces} pieces must leave at least one piece in and one out`);
  }
  const trigger = await loadTrigger(cfg.trigger ?? 'hellokitty_32.png', imageSize);
  const train = gridPieces(trigger, imageSize, pieces, alpha);
  const whole = piece(trigger, testAlpha);
  // A random subset of `used` pieces, in increasing order (the order of blending does not matter:
  // the pieces do not overlap).
  const chosenPieces = (rng: Rng) => Array.from(rng.permutation(pieces).subarray(0, used)).sort((a, b) => a - b);
  const poison = (img: Uint8Array, h: number, w: number, rng: Rng) => {
    checkImage('adap-blend', img, h, w, imageSize);
    return blendPieces(
      img,
      chosenPieces(rng).map((k) => train[k]),
    );
  };
  return {
    name: 'adap-blend',
    trainPieces: train,
    chosenPieces,
    applyTrain: (img, h, w, _index, rng) => poison(img, h, w, rng),
    applyCover: (img, h, w, _index, rng) => poison(img, h, w, rng),
    applyTest(img, h, w) {
      checkImage('adap-blend', img, h, w, imageSize);
      return blendPieces(img, [whole]);
    },
  };
}
