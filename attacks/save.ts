// Write a poisoned set to disk the way a user would upload one: an ImageFolder of PNG files,
// plus the ground truth and a preview grid. PNG is lossless, so the stored trigger is exactly
// the one applied; JPEG would blur a 3x3 patch and smear a WaNet warp into its block noise.
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import sharp from 'sharp';
import type { ImageSource, PoisonTruth } from '../data/types.js';
import { compareIds } from '../data/formats.js';
import { PoisonedImages } from './poison.js';

const BATCH = 256;

export interface SavedPoisoned {
  dir: string;
  /** The ImageFolder root to ingest: `<dir>/train`. */
  datasetDir: string;
  /** Ground truth with indices into the saved set in ImageFolder order (what re-ingest sees). */
  truth: PoisonTruth;
  /** Id (path relative to `datasetDir`) of every saved sample, in ImageFolder order. */
  ids: string[];
}

/**
 * Layout `<class>/<index>.png`. An ImageFolder reader (data/formats.ts) numbers classes by
 * sorted folder name and orders samples by `compareIds`; the same comparator here predicts
 * that order, so sample i of the saved set is `order[i]` of `poisoned`, and the truth written
 * is remapped to it.
 */
function folderOrder(poisoned: ImageSource): { order: number[]; ids: string[] } {
  const classes = poisoned.classes;
  const count = new Int32Array(classes.length);
  for (let i = 0; i < poisoned.size; i++) count[poisoned.labels[i]]++;
  for (let c = 0; c < classes.length; c++) {
    const name = classes[c];
    if (!name || name.startsWith('.') || /[/\\\0]/.test(name)) {
      throw new Error(`savePoisoned: class name ${JSON.stringify(name)} cannot be a folder name`);
    }
    if (c > 0 && !(classes[c - 1] < name)) {
      throw new Error(
        `savePoisoned: class names must be unique and sorted, or an ImageFolder re-ingest renumbers them (${classes[c - 1]} before ${name})`,
      );
    }
    // An ImageFolder cannot hold an empty class: the reader rejects an empty folder.
    if (count[c] === 0) throw new Error(`savePoisoned: class ${name} has no samples; an ImageFolder cannot represent it`);
  }
  const digits = String(Math.max(0, poisoned.size - 1)).length;
  const idOf = (i: number) => `${classes[poisoned.labels[i]]}/${String(i).padStart(digits, '0')}.png`;
  const order = Array.from({ length: poisoned.size }, (_, i) => i);
  const ids = order.map(idOf);
  order.sort((a, b) => compareIds(ids[a], ids[b]));
  return { order, ids: order.map((i) => ids[i]) };
}

function remapTruth(truth: PoisonTruth, order: number[]): PoisonTruth {
  const newIndex = new Int32Array(order.length);
  order.forEach((old, pos) => (newIndex[old] = pos));
  const map = (list: number[]) =>
    list.map((i) => {
      if (!(i >= 0 && i < order.length)) throw new Error(`savePoisoned: truth index ${i} outside the dataset`);
      return newIndex[i];
    });
  const out: PoisonTruth = { ...truth, poisoned: map(truth.poisoned), sourceLabels: truth.sourceLabels.slice() };
  if (truth.cover) out.cover = map(truth.cover);
  return out;
}

function png(pixels: Uint8Array, width: number, height: number) {
  return sharp(pixels, { raw: { width, height, channels: 3 } }).png();
}

/**
 * Preview grid: for up to 16 poisoned samples, clean | poisoned | |difference| x 4 (WaNet
 * and Blend are invisible side by side), 4 triplets a row, small images upscaled by pixel
 * repetition so that a 3x3 patch stays sharp.
 */
async function writePreview(poisoned: ImageSource, clean: ImageSource | undefined, truth: PoisonTruth, path: string) {
  const picks = truth.poisoned.slice(0, 16);
  if (!picks.length) return;
  const { height: h, width: w } = poisoned;
  const scale = Math.max(1, Math.floor(96 / Math.max(h, w)));
  const cellH = h * scale;
  const cellW = w * scale;
  const gap = 4;
  const perRow = 4;
  const cols = perRow * 3;
  const rows = Math.ceil(picks.length / perRow);
  const W = cols * cellW + (cols + 1) * gap;
  const H = rows * cellH + (rows + 1) * gap;
  const canvas = new Uint8Array(W * H * 3).fill(255);
  const after = await poisoned.readImages(picks);
  const before = clean ? await clean.readImages(picks) : undefined;
  const px = h * w * 3;
  const draw = (img: Uint8Array, off: number, col: number, row: number, f: (v: number, i: number) => number) => {
    const x0 = gap + col * (cellW + gap);
    const y0 = gap + row * (cellH + gap);
    for (let y = 0; y < cellH; y++) {
      for (let x = 0; x < cellW; x++) {
        const s = off + (Math.floor(y / scale) * w + Math.floor(x / scale)) * 3;
        const d = ((y0 + y) * W + x0 + x) * 3;
        for (let c = 0; c < 3; c++) canvas[d + c] = f(img[s + c], s + c);
      }
    }
  };
  picks.forEach((_, k) => {
    const row = Math.floor(k / perRow);
    const col = (k % perRow) * 3;
    const off = k * px;
    if (before) draw(before, off, col, row, (v) => v);
    draw(after, off, col + 1, row, (v) => v);
    if (before) draw(after, off, col + 2, row, (v, i) => Math.min(255, 4 * Math.abs(v - before[i])));
  });
  await png(canvas, W, H).toFile(path);
}

/**
 * Save `poisoned` under `outDir` (which must not exist): `train/<class>/<index>.png` (an
 * ImageFolder with nothing else in it), `truth.json`, `preview.png`. Written into a temporary sibling folder and renamed, so a half-written set is
 * never visible. `clean` (for the preview) defaults to the clean set behind a PoisonedImages.
 */
export async function savePoisoned(poisoned: ImageSource, truth: PoisonTruth, outDir: string, clean?: ImageSource): Promise<SavedPoisoned> {
  const dir = resolve(outDir);
  if (existsSync(dir)) throw new Error(`savePoisoned: ${dir} already exists; refusing to overwrite`);
  if (truth.sourceLabels.length !== truth.poisoned.length) {
    throw new Error(`savePoisoned: truth has ${truth.poisoned.length} poisoned indices but ${truth.sourceLabels.length} source labels`);
  }
  const { order, ids } = folderOrder(poisoned);
  const savedTruth = remapTruth(truth, order);
  await mkdir(dirname(dir), { recursive: true });
  const tmp = await mkdtemp(join(dirname(dir), `.${basename(dir)}.tmp-`));
  try {
    for (const name of poisoned.classes) await mkdir(join(tmp, 'train', name), { recursive: true });
    const { height: h, width: w } = poisoned;
    const px = h * w * 3;
    for (let start = 0; start < order.length; start += BATCH) {
      const batch = order.slice(start, start + BATCH);
      const pixels = await poisoned.readImages(batch);
      await Promise.all(batch.map((_, j) => png(pixels.subarray(j * px, (j + 1) * px), w, h).toFile(join(tmp, 'train', ids[start + j]))));
    }
    await writeFile(join(tmp, 'truth.json'), JSON.stringify(savedTruth, null, 2) + '\n');
    const cleanSource = clean ?? (poisoned instanceof PoisonedImages ? poisoned.clean : undefined);
    await writePreview(poisoned, cleanSource, truth, join(tmp, 'preview.png'));
    await rename(tmp, dir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
  return { dir, datasetDir: join(dir, 'train'), truth: savedTruth, ids };
}
