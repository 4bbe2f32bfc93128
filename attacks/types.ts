// One shape for every poison-label attack, so that poisoning, the ASR test set and the
// benchmarks never need to know which attack they run (the BackdoorBench registry idea).
import type { Rng } from '../ml/random.js';

export type AttackName = 'badnets' | 'blend' | 'wanet';

interface AttackConfigBase {
  /** y_T (0 in the benchmarks). */
  targetClass: number;
  /** Fraction of the whole training set that is poisoned (0.1 in the benchmarks). */
  rate: number;
  /** Fraction of the whole training set used as covers (trigger applied, label kept). */
  coverRate?: number;
  seed: number;
}

export interface BadnetsConfig extends AttackConfigBase {
  name: 'badnets';
  /** Trigger file; default badnet_patch_32.png (3x3) up to 32 px, apple_white.png (32x32 logo) above. */
  trigger?: string;
  /** Where the masked part of the trigger is stamped; the paper puts it upper-left. */
  corner?: 'upper-left' | 'lower-right';
}

export interface BlendConfig extends AttackConfigBase {
  name: 'blend';
  /** x' = (1 - alpha) x + alpha t (0.1 train and test). */
  alpha?: number;
  /** Trigger file resized to the image, or 'noise' for a seeded uniform noise image;
   *  default hellokitty_32.png up to 32 px, 'noise' above (the ImageNet setting). */
  trigger?: string;
}

export interface WanetConfig extends AttackConfigBase {
  name: 'wanet';
  /** Side of the random control grid (4). */
  k?: number;
  /** Warping strength (0.5). */
  s?: number;
  /** Amplitude of the per-cover random grid noise, in units of 1/height of the [-1, 1] grid (1). */
  coverNoise?: number;
}

export type AttackConfig = BadnetsConfig | BlendConfig | WanetConfig;

/**
 * An attack's image transforms. All take and return uint8 HWC images of the size given to
 * `createAttack`, never modify their input, and round the result to 8 bits like an attacker's
 * stored image.
 */
export interface Attack {
  name: AttackName;
  /** Trigger for poisoned training sample `index` (the index lets sample-specific attacks vary). */
  applyTrain(img: Uint8Array, h: number, w: number, index: number, rng: Rng): Uint8Array;
  /** Test-time trigger (what the ASR is measured with). */
  applyTest(img: Uint8Array, h: number, w: number, rng: Rng): Uint8Array;
  /** Cover transform (label kept); absent = the training trigger. */
  applyCover?(img: Uint8Array, h: number, w: number, index: number, rng: Rng): Uint8Array;
}

export function checkImage(name: string, img: Uint8Array, h: number, w: number, size: number): void {
  if (h !== size || w !== size) throw new Error(`${name}: attack was built for ${size}x${size} images, got ${w}x${h}`);
  if (img.length !== h * w * 3) throw new Error(`${name}: image has ${img.length} bytes, expected ${h * w * 3} (HWC RGB)`);
}
