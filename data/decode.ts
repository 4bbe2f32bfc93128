// Decoding one source image into the ingest's pixels, and the memory budget that bounds it.
//
// Resizing uses fit 'fill' (stretch to imageSize x imageSize, no crop): backdoor triggers often
// sit in a corner, and a centre crop ('cover') could cut them off and hide the very thing the
// audit looks for. EXIF orientation is applied, alpha is dropped, grey/CMYK become sRGB.
//
// Decode memory is bounded by a budget (IngestOptions.decodeMemory, else the variable
// BACKDOOR_AUDIT_DECODE_MEMORY, else 1 GiB): see decodeLimits. Every image's header is read in
// the first pass of ingest (imageHeader: no pixels decoded), so an image too large for the budget
// is refused, naming it and its size, before anything is decoded or written; the decode itself
// runs under sharp's limitInputPixels with the same limit.
import sharp, { type Metadata, type OutputInfo } from 'sharp';
import { DatasetError } from './dataset-error.js';
import { CIFAR_SIDE } from './formats.js';

/** Images decoded at once at most: enough to keep sharp's thread pool busy. */
export const MAX_DECODE_CONCURRENCY = 4;
/** Decode memory when neither the option nor the variable gives one. */
export const DEFAULT_DECODE_MEMORY = 1024 ** 3;
/** The variable that sets the decode memory of a worker (bytes, or e.g. 512MiB, 2GiB). */
export const DECODE_MEMORY_VARIABLE = 'BACKDOOR_AUDIT_DECODE_MEMORY';
/**
 * The smallest share of the budget one decode gets before fewer images are decoded at once: a
 * 4096x4096 8-bit RGBA raster (64 MiB), so a small budget keeps accepting usual photo sizes.
 */
const MIN_DECODE_SHARE = 4096 * 4096 * 4;

/**
 * How decoding shares its memory budget. A decoder may hold an image's whole raster (an
 * interlaced PNG, a WebP, a rotation does: a 16000x16000 interlaced PNG took 755 MB), so each
 * image is costed at width x height x channels x bytes per sample, from its header. Up to
 * MAX_DECODE_CONCURRENCY images are decoded at once, fewer when the budget is too small to give
 * each MIN_DECODE_SHARE; an image costing more than its share (`perImage`) is refused. With
 * the default 1 GiB: 4 at once, 256 MiB each, i.e. up to 89 megapixels of 8-bit RGB
 * (about 9400x9400) or 67 of 8-bit RGBA (8192x8192).
 */
export interface DecodeLimits {
  memory: number;
  concurrency: number;
  /** Bytes one decode may take. */
  perImage: number;
}

export function decodeLimits(memory: number): DecodeLimits {
  if (!Number.isFinite(memory) || memory < 1 << 20) throw new Error(`decode memory must be at least 1 MiB, got ${memory} bytes`);
  const concurrency = Math.max(1, Math.min(MAX_DECODE_CONCURRENCY, Math.floor(memory / MIN_DECODE_SHARE)));
  return { memory, concurrency, perImage: Math.floor(memory / concurrency) };
}

/** The decode memory set by BACKDOOR_AUDIT_DECODE_MEMORY: bytes, or a number with K/M/G/T (binary units, optional "iB"/"B"). */
export function decodeMemoryFromEnv(): number | undefined {
  const value = process.env[DECODE_MEMORY_VARIABLE];
  if (value === undefined || value.trim() === '') return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(value);
  if (!m) throw new Error(`${DECODE_MEMORY_VARIABLE}=${value}: expected bytes or a size such as 512MiB or 2GiB`);
  const bytes = Math.floor(Number(m[1]) * 1024 ** ['', 'k', 'm', 'g', 't'].indexOf(m[2]!.toLowerCase()));
  if (bytes < 1 << 20) throw new Error(`${DECODE_MEMORY_VARIABLE}=${value}: at least 1MiB is needed to decode images`);
  return bytes;
}

export interface ImageHeader {
  width: number;
  height: number;
  /** Bands the decoder produces (before alpha is dropped). */
  channels: number;
  /** Bytes per band value: 1, or 2 for 16-bit PNGs and 12-bit JPEGs. */
  sampleBytes: number;
}

/** Bytes per sample of a libvips band format (metadata's `depth`). */
const SAMPLE_BYTES: Record<string, number> = {
  uchar: 1,
  char: 1,
  ushort: 2,
  short: 2,
  uint: 4,
  int: 4,
  float: 4,
  complex: 8,
  double: 8,
  dpcomplex: 16,
};

/** PNG colour type -> bands; a palette counts 4, in case it carries transparency. */
const PNG_CHANNELS: Record<number, number> = { 0: 1, 2: 3, 3: 4, 4: 2, 6: 4 };

/**
 * The header of a PNG, JPEG or WebP read directly from its first bytes, in microseconds:
 * sharp's metadata() costs about 0.2 ms an image, a fifth of ingest's time on CIFAR-size
 * images. Undefined for any other format or any header it does not follow (a JPEG whose
 * height comes after the first scan, say): imageHeader() then asks metadata().
 */
export function quickImageHeader(b: Uint8Array): ImageHeader | undefined {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const text = (at: number, n: number): string => String.fromCharCode(...b.subarray(at, at + n));
  // PNG: the signature, then the IHDR chunk (width, height, bit depth, colour type).
  if (b.length >= 26 && dv.getUint32(0) === 0x89504e47 && dv.getUint32(4) === 0x0d0a1a0a && text(12, 4) === 'IHDR') {
    const channels = PNG_CHANNELS[b[25]!];
    return channels ? { width: dv.getUint32(16), height: dv.getUint32(20), channels, sampleBytes: b[24] === 16 ? 2 : 1 } : undefined;
  }
  // JPEG: marker segments up to the first start-of-frame (precision, height, width, components).
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    for (let i = 2; i + 9 < b.length;) {
      if (b[i] !== 0xff) return undefined;
      const marker = b[i + 1]!;
      if (marker === 0xff) {
        i++; // fill byte
      } else if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd8)) {
        i += 2; // a marker without a segment
      } else if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
        const [height, width] = [dv.getUint16(i + 5), dv.getUint16(i + 7)];
        return height && width ? { width, height, channels: b[i + 9]!, sampleBytes: b[i + 4]! > 8 ? 2 : 1 } : undefined;
      } else if (marker === 0xda || marker === 0xd9) {
        return undefined; // a scan or the end before any frame header
      } else {
        i += 2 + dv.getUint16(i + 2);
      }
    }
    return undefined;
  }
  // WebP: a RIFF container whose first chunk is VP8 (lossy), VP8L (lossless) or VP8X (extended).
  if (b.length >= 30 && text(0, 4) === 'RIFF' && text(8, 4) === 'WEBP') {
    const chunk = text(12, 4);
    if (chunk === 'VP8 ' && b[23] === 0x9d && b[24] === 0x01 && b[25] === 0x2a) {
      return { width: dv.getUint16(26, true) & 0x3fff, height: dv.getUint16(28, true) & 0x3fff, channels: 3, sampleBytes: 1 };
    }
    if (chunk === 'VP8L' && b[20] === 0x2f) {
      const bits = dv.getUint32(21, true);
      return { width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1, channels: bits & (1 << 28) ? 4 : 3, sampleBytes: 1 };
    }
    if (chunk === 'VP8X') {
      const width = 1 + (b[24]! | (b[25]! << 8) | (b[26]! << 16));
      const height = 1 + (b[27]! | (b[28]! << 8) | (b[29]! << 16));
      return { width, height, channels: b[20]! & 0x10 ? 4 : 3, sampleBytes: 1 };
    }
  }
  return undefined;
}

/** An image's header, without decoding its pixels: quickImageHeader, else sharp's metadata(). */
export async function imageHeader(bytes: Uint8Array, file: string): Promise<ImageHeader> {
  const quick = quickImageHeader(bytes);
  if (quick && quick.width > 0 && quick.height > 0) return quick;
  let meta: Metadata;
  try {
    // No pixel limit here: only the header is read, and checkImageHeader's message says more.
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw new DatasetError(file, `cannot decode image (${(err as Error).message.split('\n')[0]})`);
  }
  if (!meta.width || !meta.height) throw new DatasetError(file, 'cannot decode image (no width and height in its header)');
  return { width: meta.width, height: meta.height, channels: meta.channels ?? 4, sampleBytes: SAMPLE_BYTES[meta.depth ?? 'uchar'] ?? 8 };
}

/**
 * Refuses an image whose raster would exceed its share of the decode memory, from its header.
 * Returns the pixel limit for its decode (sharp's limitInputPixels), so that libvips holds to
 * the same limit whatever the header parse missed.
 */
export async function checkImageHeader(bytes: Uint8Array, file: string, limits: DecodeLimits): Promise<number> {
  const { width, height, channels, sampleBytes } = await imageHeader(bytes, file);
  const pixelLimit = Math.floor(limits.perImage / (channels * sampleBytes));
  if (width * height > pixelLimit) {
    throw new DatasetError(
      file,
      `image is ${width}x${height} (${megapixels(width * height)}, ${channels} channels of ${8 * sampleBytes} bits): decoding it ` +
        `could take ${mib(width * height * channels * sampleBytes)}, over the ${mib(limits.perImage)} (${megapixels(pixelLimit)}) ` +
        `each image may use (${mib(limits.memory)} of decode memory, ${limits.concurrency} images at once); ` +
        `shrink the image, or raise ${DECODE_MEMORY_VARIABLE}`,
    );
  }
  return pixelLimit;
}

const megapixels = (n: number): string => `${(n / 1e6).toFixed(1)} megapixels`;
const mib = (n: number): string => `${Math.round(n / 2 ** 20)} MiB`;

export async function decodeImage(bytes: Uint8Array, file: string, size: number, pixelLimit: number): Promise<Uint8Array> {
  let out: { data: Buffer; info: OutputInfo };
  try {
    // The header was checked against the budget; the limit makes libvips hold to it as well.
    out = await sharp(bytes, { failOn: 'warning', limitInputPixels: pixelLimit })
      .rotate()
      .removeAlpha()
      .toColourspace('srgb')
      .resize(size, size, { fit: 'fill' })
      .raw()
      .toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw new DatasetError(file, `cannot decode image (${(err as Error).message.split('\n')[0]})`);
  }
  const { data, info } = out;
  if (info.channels !== 3 || data.length !== size * size * 3) {
    throw new DatasetError(file, `decoded to ${info.width}x${info.height}x${info.channels}, expected ${size}x${size}x3 uint8`);
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.length);
}

/** CIFAR record: label byte, then 1024 R, 1024 G, 1024 B bytes; converted to HWC. */
export async function decodeCifarRecord(record: Uint8Array, file: string, size: number): Promise<Uint8Array> {
  const plane = CIFAR_SIDE * CIFAR_SIDE;
  const hwc = new Uint8Array(plane * 3);
  for (let p = 0; p < plane; p++) {
    hwc[p * 3] = record[1 + p]!;
    hwc[p * 3 + 1] = record[1 + plane + p]!;
    hwc[p * 3 + 2] = record[1 + 2 * plane + p]!;
  }
  if (size === CIFAR_SIDE) return hwc;
  try {
    const data = await sharp(hwc, { raw: { width: CIFAR_SIDE, height: CIFAR_SIDE, channels: 3 } })
      .resize(size, size, { fit: 'fill' })
      .raw()
      .toBuffer();
    return new Uint8Array(data.buffer, data.byteOffset, data.length);
  } catch (err) {
    throw new DatasetError(file, `cannot resize CIFAR record (${(err as Error).message})`);
  }
}
