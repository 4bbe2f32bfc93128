// Blend (Chen et al.): the whole image is mixed with a trigger image at a low weight.
import { Rng } from '../ml/random.js';
import { checkImage, type Attack, type BlendConfig } from './types.js';
import { loadTrigger } from './triggers.js';

/** round((1 - alpha) x + alpha t), per byte. */
function blendImages(img: Uint8Array, trigger: Uint8Array, alpha: number): Uint8Array {
  if (img.length !== trigger.length) throw new Error(`blend: image has ${img.length} bytes, trigger ${trigger.length}`);
  const out = new Uint8Array(img.length);
  for (let i = 0; i < img.length; i++) out[i] = Math.round((1 - alpha) * img[i] + alpha * trigger[i]);
  return out;
}

/** A size x size x 3 image of uniform random bytes, fixed by the rng. */
function noiseImage(size: number, rng: Rng): Uint8Array {
  const out = new Uint8Array(size * size * 3);
  for (let i = 0; i < out.length; i++) out[i] = rng.int(256);
  return out;
}

export async function createBlend(cfg: BlendConfig, imageSize: number, triggerRng: Rng): Promise<Attack> {
  const alpha = cfg.alpha ?? 0.1;
  if (!(alpha > 0 && alpha <= 1)) throw new Error(`blend: alpha must be in (0, 1], got ${alpha}`);
  // The benchmarks blend Hello Kitty into CIFAR images and seeded noise into ImageNet ones.
  const file = cfg.trigger ?? (imageSize <= 32 ? 'hellokitty_32.png' : 'noise');
  const trigger = file === 'noise' ? noiseImage(imageSize, triggerRng) : (await loadTrigger(file, imageSize)).pattern;
  const apply = (img: Uint8Array, h: number, w: number): Uint8Array => {
    checkImage('blend', img, h, w, imageSize);
    return blendImages(img, trigger, alpha);
  };
  return {
    name: 'blend',
    applyTrain: (img, h, w) => apply(img, h, w),
    applyTest: (img, h, w) => apply(img, h, w),
  };
}
