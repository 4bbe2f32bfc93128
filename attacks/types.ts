// One shape for every attack, so that poisoning, the ASR test set and the benchmarks never
// need to know which attack they run (the BackdoorBench registry idea).
import type { ImageSource } from '../data/types.js';
import type { Rng } from '../ml/random.js';

export type AttackName = 'badnets' | 'blend' | 'wanet' | 'lc' | 'sig' | 'issba' | 'adap-patch' | 'adap-blend';

interface AttackConfigBase {
  /** y_T (0 in the benchmarks). */
  targetClass: number;
  /**
   * Fraction of the whole training set that is poisoned (0.1 in the benchmarks; 0.01 for
   * Adap-*). For LC too, as in backdoor-toolbox: its "25% of the target class" is 0.025 on a
   * balanced 10-class set, and more than the target class holds is an error.
   */
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

/** Label-consistent (Turner et al. 2019): adversarially perturbed target-class images, stamped, labels kept. */
export interface LcConfig extends AttackConfigBase {
  name: 'lc';
  /** L-inf budget of the PGD perturbation, in units of 1/255 (16). */
  eps?: number;
  /** PGD step, in units of 1/255 (1.5). */
  stepSize?: number;
  /** PGD steps (30). */
  steps?: number;
  /** Trigger file; default badnet_patch4_32.png, the 3x3 checker in each of the 4 corners. */
  trigger?: string;
  /** ResNet-18 width of the surrogate classifier trained on the clean set (8: seconds on a CPU; not the paper's). */
  surrogateWidth?: number;
  /** Epochs of the surrogate classifier (4). */
  surrogateEpochs?: number;
}

/** SIG (Barni et al. 2019): a sinusoidal signal on target-class images, labels kept. */
export interface SigConfig extends AttackConfigBase {
  name: 'sig';
  /** Amplitude of the sinusoid in units of 1/255 (20, the original's). */
  delta?: number;
  /** Amplitude at test time (default: delta). */
  testDelta?: number;
  /** Periods across the image width (6). */
  frequency?: number;
}

/** ISSBA (Li et al. 2021): a sample-specific invisible residual from a StegaStamp-style encoder trained here. */
export interface IssbaConfig extends AttackConfigBase {
  name: 'issba';
  /** Length of the secret bit string (20). */
  bits?: number;
  /** Bound of the residual, L-inf in units of 1/255 (8; the original bounds it by a loss only). */
  eps?: number;
  /** Encoder/decoder training steps of 32 images (400). */
  trainSteps?: number;
  /** Channels of the encoder's first layer (16; the original U-Net starts at 32 on 400x400 images). */
  width?: number;
}

/** Adap-Patch (Qi et al. 2023): four patch triggers, one per poisoned or cover image; a stronger pair at test time. */
export interface AdapPatchConfig extends AttackConfigBase {
  name: 'adap-patch';
}

/** Adap-Blend (Qi et al. 2023): the blend trigger cut in a grid of pieces, a random part of them per training image. */
export interface AdapBlendConfig extends AttackConfigBase {
  name: 'adap-blend';
  /** Blend weight of the poisoned and cover images (0.15). */
  alpha?: number;
  /** Blend weight of the whole trigger at test time (0.2). */
  testAlpha?: number;
  /** Number of pieces, a square whose side divides the image size (16 = a 4x4 grid). */
  pieces?: number;
  /** Fraction of the pieces blended into each training image (0.5). */
  pieceRate?: number;
  /** Trigger file resized to the image; default hellokitty_32.png. */
  trigger?: string;
}

export type AttackConfig =
  BadnetsConfig | BlendConfig | WanetConfig | LcConfig | SigConfig | IssbaConfig | AdapPatchConfig | AdapBlendConfig;

/**
 * What some attacks need beyond their config. LC and ISSBA train a model on the clean
 * training set; LC also perturbs the samples it will poison, once, at creation.
 */
export interface AttackContext {
  /** The clean training set (LC's surrogate classifier, ISSBA's encoder). */
  clean?: ImageSource;
  /** Indices of `clean` that will be poisoned (poisonDataset's choice); LC prepares exactly these. */
  poisoned?: readonly number[];
  /** A folder written by `Attack.save` (ISSBA's encoder), used instead of training again. */
  modelDir?: string;
  signal?: AbortSignal;
  log?: (line: string) => void;
}

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
  /** Writes what a later `createAttack` needs to rebuild the same transforms (a trained model) into `dir`. */
  save?(dir: string): Promise<void>;
  /** Frees tensors the attack holds. */
  dispose?(): void;
}

export function checkImage(name: string, img: Uint8Array, h: number, w: number, size: number): void {
  if (h !== size || w !== size) throw new Error(`${name}: attack was built for ${size}x${size} images, got ${w}x${h}`);
  if (img.length !== h * w * 3) throw new Error(`${name}: image has ${img.length} bytes, expected ${h * w * 3} (HWC RGB)`);
}
