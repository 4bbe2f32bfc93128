// Trigger patterns of the public benchmarks, read from triggers/ in the shared data folder
// (data/paths.ts), else from the copies bundled with the checkout (data/bundled/triggers: the
// 32x32 defaults of BadNets and Blend). A trigger is an RGB pattern plus a binary mask of where
// it replaces the image.
import { existsSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import sharp from 'sharp';
import { bundledDataDir, findSharedDataFile, sharedDataDir, sharedDataFile } from '../data/paths.js';

export interface Trigger {
  height: number;
  width: number;
  /** HWC, 3 channels. */
  pattern: Uint8Array;
  /** HW, 1 where the trigger replaces the image, 0 elsewhere. */
  mask: Uint8Array;
}

/** The shared data folder's triggers/ (tests read the files directly to check the loader). */
export function triggersDir(): string {
  return join(sharedDataDir(), 'triggers');
}

/** The bundled copies of the default 32x32 triggers (used when the shared folder lacks one). */
export const bundledTriggersDir: string = join(bundledDataDir, 'triggers');

/**
 * The file of trigger `name`: triggers/ of the shared data folder, else the bundled copy; when
 * neither has it, the error names the shared path and BACKDOOR_AUDIT_SHARED_DATA.
 */
export function triggerPath(name: string): string {
  const shared = findSharedDataFile('triggers', name);
  if (shared !== undefined) return shared;
  const bundled = join(bundledTriggersDir, name);
  if (existsSync(bundled)) return bundled;
  return sharedDataFile('triggers', name);
}

async function readRgb(path: string, size?: number, kernel: 'lanczos3' | 'nearest' = 'lanczos3') {
  let img = sharp(path).removeAlpha();
  const meta = await sharp(path).metadata();
  // Resample only when needed, so a trigger of the right size keeps its exact pixels.
  if (size !== undefined && (meta.width !== size || meta.height !== size)) {
    img = img.resize(size, size, { fit: 'fill', kernel });
  }
  const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`${path}: expected an RGB image, got ${info.channels} channels`);
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), height: info.height, width: info.width };
}

/**
 * Load trigger `file` (a name inside the triggers folder, see triggerPath, or a path). Its mask is
 * `mask_<file>` when that exists (white = trigger), otherwise every non-black pixel, the
 * convention of the benchmarks' mask-less triggers. With `size`, pattern and mask are resized
 * to size x size (mask with nearest neighbour so that it stays binary).
 */
export async function loadTrigger(file: string, size?: number): Promise<Trigger> {
  const path = file.includes('/') ? resolve(file) : triggerPath(file);
  const rgb = await readRgb(path, size);
  const maskPath = join(dirname(path), `mask_${basename(path)}`);
  const mask = new Uint8Array(rgb.height * rgb.width);
  if (existsSync(maskPath)) {
    const m = await readRgb(maskPath, size, 'nearest');
    if (m.height !== rgb.height || m.width !== rgb.width) {
      throw new Error(`${maskPath}: mask is ${m.width}x${m.height}, trigger is ${rgb.width}x${rgb.height}`);
    }
    for (let p = 0; p < mask.length; p++) mask[p] = m.data[p * 3] >= 128 ? 1 : 0;
  } else {
    for (let p = 0; p < mask.length; p++) {
      mask[p] = rgb.data[p * 3] | rgb.data[p * 3 + 1] | rgb.data[p * 3 + 2] ? 1 : 0;
    }
  }
  return { height: rgb.height, width: rgb.width, pattern: rgb.data, mask };
}

/** The smallest rectangle holding every masked pixel; throws on an empty mask. */
export function maskBounds(t: Trigger): { top: number; left: number; height: number; width: number } {
  let top = t.height;
  let left = t.width;
  let bottom = -1;
  let right = -1;
  for (let y = 0; y < t.height; y++) {
    for (let x = 0; x < t.width; x++) {
      if (!t.mask[y * t.width + x]) continue;
      top = Math.min(top, y);
      bottom = Math.max(bottom, y);
      left = Math.min(left, x);
      right = Math.max(right, x);
    }
  }
  if (bottom < 0) throw new Error('trigger mask is empty');
  return { top, left, height: bottom - top + 1, width: right - left + 1 };
}
