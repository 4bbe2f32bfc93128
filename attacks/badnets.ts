// BadNets (Gu et al.): a small fixed pattern stamped into a corner, same on train and test.
import { checkImage, type Attack, type BadnetsConfig } from './types.js';
import { loadTrigger, maskBounds, type Trigger } from './triggers.js';

/** Pixels of `trigger`'s masked rectangle copied to (top, left) of an HWC image. */
export interface Stamp {
  top: number;
  left: number;
  height: number;
  width: number;
  /** HWC pattern of the rectangle. */
  pattern: Uint8Array;
  /** HW mask of the rectangle. */
  mask: Uint8Array;
}

/** Cut the trigger's masked rectangle out and place it in a corner of a size x size image. */
export function cornerStamp(trigger: Trigger, size: number, corner: 'upper-left' | 'lower-right'): Stamp {
  const b = maskBounds(trigger);
  if (b.height > size || b.width > size) {
    throw new Error(`trigger of ${b.width}x${b.height} does not fit a ${size}x${size} image`);
  }
  const pattern = new Uint8Array(b.height * b.width * 3);
  const mask = new Uint8Array(b.height * b.width);
  for (let y = 0; y < b.height; y++) {
    for (let x = 0; x < b.width; x++) {
      const src = (b.top + y) * trigger.width + b.left + x;
      mask[y * b.width + x] = trigger.mask[src];
      for (let c = 0; c < 3; c++) pattern[(y * b.width + x) * 3 + c] = trigger.pattern[src * 3 + c];
    }
  }
  const top = corner === 'upper-left' ? 0 : size - b.height;
  const left = corner === 'upper-left' ? 0 : size - b.width;
  return { top, left, height: b.height, width: b.width, pattern, mask };
}

/** A copy of `img` (HWC, width w) with the stamp's masked pixels replaced. */
export function applyStamp(img: Uint8Array, w: number, s: Stamp): Uint8Array {
  const out = img.slice();
  for (let y = 0; y < s.height; y++) {
    for (let x = 0; x < s.width; x++) {
      if (!s.mask[y * s.width + x]) continue;
      const dst = ((s.top + y) * w + s.left + x) * 3;
      const src = (y * s.width + x) * 3;
      out[dst] = s.pattern[src];
      out[dst + 1] = s.pattern[src + 1];
      out[dst + 2] = s.pattern[src + 2];
    }
  }
  return out;
}

export async function createBadnets(cfg: BadnetsConfig, imageSize: number): Promise<Attack> {
  // The benchmarks' two settings: a 3x3 patch on CIFAR-sized images, a 32x32 logo on ImageNet-sized ones.
  const file = cfg.trigger ?? (imageSize <= 32 ? 'badnet_patch_32.png' : 'apple_white.png');
  const stamp = cornerStamp(await loadTrigger(file), imageSize, cfg.corner ?? 'upper-left');
  const apply = (img: Uint8Array, h: number, w: number): Uint8Array => {
    checkImage('badnets', img, h, w, imageSize);
    return applyStamp(img, w, stamp);
  };
  return {
    name: 'badnets',
    applyTrain: (img, h, w) => apply(img, h, w),
    applyTest: (img, h, w) => apply(img, h, w),
  };
}
