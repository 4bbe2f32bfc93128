// Thumbnails for the report as data URIs (sharp), so the page opens offline as one file.
import sharp from 'sharp';
import type { ImageSource } from '../data/types.js';

/** Side of a thumbnail in CSS pixels: small images are enlarged without smoothing, large ones shrunk. */
export const THUMBNAIL_SIDE = 64;

/** Data URI of every requested sample, by index. Reads the images in one batch. */
export async function thumbnails(source: ImageSource, indices: readonly number[]): Promise<Map<number, string>> {
  const unique = [...new Set(indices)];
  const out = new Map<number, string>();
  if (!unique.length) return out;
  const { height, width } = source;
  const pixels = await source.readImages(unique);
  const bytes = height * width * 3;
  await Promise.all(
    unique.map(async (index, k) => {
      const img = sharp(Buffer.from(pixels.buffer, pixels.byteOffset + k * bytes, bytes), { raw: { width, height, channels: 3 } });
      // Nearest-neighbour when enlarging: a 3x3 trigger patch stays a crisp patch, as the model sees it.
      const small = Math.max(height, width) <= THUMBNAIL_SIDE;
      const buf = small
        ? await img.resize(THUMBNAIL_SIDE, THUMBNAIL_SIDE, { kernel: 'nearest', fit: 'fill' }).png().toBuffer()
        : await img
            .resize(THUMBNAIL_SIDE * 2, THUMBNAIL_SIDE * 2, { fit: 'inside' })
            .jpeg({ quality: 80 })
            .toBuffer();
      out.set(index, `data:image/${small ? 'png' : 'jpeg'};base64,${buf.toString('base64')}`);
    }),
  );
  return out;
}
