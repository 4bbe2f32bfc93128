// A few real CIFAR-10 training images, decoded by sharp through the project's own ingest and
// read back as a streamed ShardedDataset: what the encoder tests train on.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureCifar10 } from '../data/cifar10.js';
import { InMemoryImages, openDataset, type ShardedDataset } from '../data/dataset.js';
import { ingest } from '../data/ingest.js';

export interface Subset {
  source: ShardedDataset;
  /** Removes the temporary folder. */
  cleanup: () => Promise<void>;
}

/** The first `perClass` training images of every CIFAR-10 class, resized to `size` x `size`. */
export async function cifarSubset(perClass: number, size: number): Promise<Subset> {
  const { train } = await ensureCifar10();
  const dir = await mkdtemp(join(tmpdir(), 'encoder-test-'));
  await ingest({ format: 'imagefolder', root: train }, join(dir, 'data'), { imageSize: size, limitPerClass: perClass });
  const source = await openDataset(join(dir, 'data'));
  return {
    source,
    cleanup: async () => {
      await source.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Two classes a classifier separates trivially: every image of `base`, once darkened (class 0,
 * pixels / 4) and once brightened (class 1, 192 + pixels / 4). Real image content, disjoint
 * intensity ranges.
 */
export async function brightDark(base: ShardedDataset): Promise<InMemoryImages> {
  const all = await base.readImages(Int32Array.from({ length: base.size }, (_, i) => i));
  const n = base.size;
  const pixels = new Uint8Array(2 * all.length);
  for (let i = 0; i < all.length; i++) {
    pixels[i] = all[i] >> 2;
    pixels[all.length + i] = 192 + (all[i] >> 2);
  }
  const labels = new Int32Array(2 * n);
  labels.fill(1, n);
  return new InMemoryImages({
    classes: ['dark', 'bright'],
    height: base.height,
    width: base.width,
    labels,
    ids: [...base.ids.map((id) => `dark/${id}`), ...base.ids.map((id) => `bright/${id}`)],
    pixels,
  });
}
