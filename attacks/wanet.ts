// WaNet (Nguyen & Tran, 2021): an imperceptible smooth warp. A small random control grid of
// displacements is upsampled to a dense field, added to the identity sampling grid, and the
// image is resampled through it. "Noise mode" covers get the warp plus per-pixel random jitter
// and keep their label, so the network must learn the exact warp rather than any warp.
import { Rng } from '../ml/random.js';
import { checkImage, type Attack, type WanetConfig } from './types.js';

/** Cubic convolution kernel with a = -0.75 (the value PyTorch's bicubic mode uses). */
function cubicWeights(t: number, out: Float64Array): void {
  const a = -0.75;
  const near = (x: number) => ((a + 2) * x - (a + 3)) * x * x + 1; // |x| <= 1
  const far = (x: number) => ((a * x - 5 * a) * x + 8 * a) * x - 4 * a; // 1 < |x| < 2
  out[0] = far(t + 1);
  out[1] = near(t);
  out[2] = near(1 - t);
  out[3] = far(2 - t);
}

/**
 * Bicubic upsampling of a k x k x ch field (HWC) to h x w, corners aligned (the grid's
 * corners stay the image's corners); taps outside the field are clamped to its edge.
 */
export function bicubicUpsample(src: Float32Array, k: number, ch: number, h: number, w: number): Float32Array {
  if (src.length !== k * k * ch) throw new Error(`bicubicUpsample: field has ${src.length} values, expected ${k * k * ch}`);
  const taps = (n: number, size: number) => {
    const idx = new Int32Array(n * 4);
    const wt = new Float64Array(n * 4);
    const tmp = new Float64Array(4);
    for (let i = 0; i < n; i++) {
      const pos = n > 1 ? (i * (size - 1)) / (n - 1) : 0;
      const i0 = Math.floor(pos);
      cubicWeights(pos - i0, tmp);
      for (let j = 0; j < 4; j++) {
        idx[i * 4 + j] = Math.min(size - 1, Math.max(0, i0 - 1 + j));
        wt[i * 4 + j] = tmp[j];
      }
    }
    return { idx, wt };
  };
  const ty = taps(h, k);
  const tx = taps(w, k);
  const out = new Float32Array(h * w * ch);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < ch; c++) {
        let v = 0;
        for (let a = 0; a < 4; a++) {
          const row = ty.idx[y * 4 + a] * k;
          let r = 0;
          for (let b = 0; b < 4; b++) r += tx.wt[x * 4 + b] * src[(row + tx.idx[x * 4 + b]) * ch + c];
          v += ty.wt[y * 4 + a] * r;
        }
        out[(y * w + x) * ch + c] = v;
      }
    }
  }
  return out;
}

/**
 * The poisoning grid: identity grid in [-1, 1] (x, y per pixel) plus s * field / h, where the
 * field is a k x k grid of uniform(-1, 1) noise divided by its mean |.| and upsampled
 * bicubically; clamped to [-1, 1] so that no sample falls outside the image.
 */
export function warpGrid(h: number, w: number, k: number, s: number, rng: Rng): Float32Array {
  const control = new Float32Array(k * k * 2);
  let meanAbs = 0;
  for (let i = 0; i < control.length; i++) {
    control[i] = rng.uniform(-1, 1);
    meanAbs += Math.abs(control[i]);
  }
  meanAbs /= control.length;
  for (let i = 0; i < control.length; i++) control[i] /= meanAbs;
  const field = bicubicUpsample(control, k, 2, h, w);
  const grid = identityGrid(h, w);
  // Displacement in units of 1/h of the [-1, 1] grid, as in WaNet: s is then roughly pixels / 2.
  for (let i = 0; i < grid.length; i++) grid[i] = clamp1(grid[i] + (s * field[i]) / h);
  return grid;
}

export function identityGrid(h: number, w: number): Float32Array {
  const grid = new Float32Array(h * w * 2);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      grid[(y * w + x) * 2] = w > 1 ? -1 + (2 * x) / (w - 1) : 0;
      grid[(y * w + x) * 2 + 1] = h > 1 ? -1 + (2 * y) / (h - 1) : 0;
    }
  }
  return grid;
}

function clamp1(v: number): number {
  return v < -1 ? -1 : v > 1 ? 1 : v;
}

/**
 * Bilinear resampling of an HWC uint8 image through a grid of (x, y) in [-1, 1], corners
 * aligned (-1 = centre of the first pixel, 1 = centre of the last), rounded to 8 bits.
 */
export function gridSample(img: Uint8Array, h: number, w: number, grid: Float32Array): Uint8Array {
  if (grid.length !== h * w * 2) throw new Error(`gridSample: grid has ${grid.length} values, expected ${h * w * 2}`);
  const out = new Uint8Array(h * w * 3);
  for (let p = 0; p < h * w; p++) {
    const px = Math.min(w - 1, Math.max(0, ((grid[p * 2] + 1) / 2) * (w - 1)));
    const py = Math.min(h - 1, Math.max(0, ((grid[p * 2 + 1] + 1) / 2) * (h - 1)));
    const x0 = Math.floor(px);
    const y0 = Math.floor(py);
    const x1 = Math.min(x0 + 1, w - 1);
    const y1 = Math.min(y0 + 1, h - 1);
    const fx = px - x0;
    const fy = py - y0;
    for (let c = 0; c < 3; c++) {
      const top = img[(y0 * w + x0) * 3 + c] * (1 - fx) + img[(y0 * w + x1) * 3 + c] * fx;
      const bottom = img[(y1 * w + x0) * 3 + c] * (1 - fx) + img[(y1 * w + x1) * 3 + c] * fx;
      out[p * 3 + c] = Math.round(top * (1 - fy) + bottom * fy);
    }
  }
  return out;
}

export function createWanet(cfg: WanetConfig, imageSize: number, triggerRng: Rng): Attack {
  const k = cfg.k ?? 4;
  const s = cfg.s ?? 0.5;
  const coverNoise = cfg.coverNoise ?? 1;
  if (!Number.isInteger(k) || k < 2) throw new Error(`wanet: k must be an integer >= 2, got ${k}`);
  if (!(s >= 0)) throw new Error(`wanet: s must be >= 0, got ${s}`);
  const size = imageSize;
  const grid = warpGrid(size, size, k, s, triggerRng);
  const warp = (img: Uint8Array, h: number, w: number): Uint8Array => {
    checkImage('wanet', img, h, w, size);
    return gridSample(img, h, w, grid);
  };
  return {
    name: 'wanet',
    applyTrain: (img, h, w) => warp(img, h, w),
    applyTest: (img, h, w) => warp(img, h, w),
    applyCover(img, h, w, _index, rng) {
      checkImage('wanet', img, h, w, size);
      const jittered = new Float32Array(grid.length);
      for (let i = 0; i < grid.length; i++) jittered[i] = clamp1(grid[i] + (coverNoise * rng.uniform(-1, 1)) / h);
      return gridSample(img, h, w, jittered);
    },
  };
}
