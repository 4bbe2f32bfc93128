// `backdoor-audit attack <name>`: a poisoned copy of a dataset on disk, as an attacker would
// upload it, for evaluating an audit (or another tool) with ground truth. The attack and the
// dataset are checked by the pipeline schema (the same `attack:` and `dataset:` sections as a
// pipeline file); the copy is an ImageFolder of PNGs (`<class>/<name>.png`, which `ingest`
// reads), truth.json (poisoned and cover samples by file) and preview.png, published atomically.
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, extname, join, resolve } from 'node:path';
import sharp from 'sharp';
import { stringify } from 'yaml';
import { poisonDataset, writePreview } from '../attacks/index.js';
import { pathExists, publishDir } from '../data/files.js';
import { openDataset } from '../data/dataset.js';
import { ingest } from '../data/ingest.js';
import { resolveSource } from '../data/sources.js';
import type { PoisonTruth } from '../data/types.js';
import { selectBackend } from '../backend/backend.js';
import { parsePipeline, PipelineError } from './pipeline.js';

export interface AttackCommandOptions {
  /** An ImageFolder root, or `cifar10:train` / `cifar10:test`. */
  dataset: string;
  out: string;
  imageSize: number;
  limitPerClass?: number;
  /** The attack section as a pipeline file writes it (name, targetClass, rate, seed, options). */
  attack: Record<string, unknown>;
  log: (line: string) => void;
  signal?: AbortSignal;
}

/** truth.json of an exported copy: the indices of PoisonTruth plus the files they name. */
export interface ExportedTruth extends PoisonTruth {
  /** Relative path (in `out`) of every sample, in index order. */
  files: string[];
  /** Id of every sample in the clean dataset (its path there), in index order. */
  sourceIds: string[];
}

export async function exportAttack(o: AttackCommandOptions): Promise<ExportedTruth> {
  const out = resolve(o.out);
  const dataset = o.dataset.startsWith('cifar10:')
    ? { format: 'cifar10', split: o.dataset.slice('cifar10:'.length) }
    : { format: 'imagefolder', root: resolve(o.dataset) };
  if (await pathExists(out)) throw new Error(`--out ${out}: already exists; the attack writes a new folder and never replaces one`);
  // The pipeline parser validates the sections and refuses an output inside the dataset; its
  // problems are told in the command's terms (options), not as lines of a file nobody wrote.
  const pipeline = await parsePipeline(
    stringify({
      name: 'attack',
      dataset: { ...dataset, imageSize: o.imageSize, ...(o.limitPerClass ? { limitPerClass: o.limitPerClass } : {}) },
      attack: o.attack,
      output: out,
    }),
    join(process.cwd(), 'attack.yaml'),
  ).catch((err: unknown) => {
    if (!(err instanceof PipelineError)) throw err;
    const option = (path: string) =>
      path.startsWith('output')
        ? '--out'
        : path.startsWith('dataset.imageSize')
          ? '--image-size'
          : path.startsWith('dataset')
            ? '--dataset'
            : `attack ${String(o.attack.name)}`;
    throw new Error(err.problems.map((p) => `${option(p.path)}: ${p.message}`).join('\n'));
  });
  const cfg = pipeline.attack;
  if (!cfg) throw new Error('attack: no attack given');
  const work = await mkdtemp(join(tmpdir(), 'backdoor-attack-'));
  try {
    const { spec } = await resolveSource(pipeline.dataset.source);
    await ingest(spec, join(work, 'clean'), {
      imageSize: o.imageSize,
      ...(pipeline.dataset.limitPerClass ? { limitPerClass: pipeline.dataset.limitPerClass } : {}),
      ...(o.signal ? { signal: o.signal } : {}),
    });
    const clean = await openDataset(join(work, 'clean'));
    try {
      if (cfg.name === 'lc' || cfg.name === 'issba') await selectBackend('auto', 'training', o.log);
      const { poisoned, truth, attack } = await poisonDataset(clean, cfg, { log: o.log, ...(o.signal ? { signal: o.signal } : {}) });
      try {
        return await publishDir(
          out,
          async (tmp) => {
            const files = await writeImageFolder(poisoned, tmp, o.signal);
            const exported: ExportedTruth = { ...truth, files, sourceIds: [...clean.ids] };
            await writeFile(join(tmp, 'truth.json'), JSON.stringify(exported) + '\n');
            if (truth.poisoned.length) await writePreview(join(tmp, 'preview.png'), clean, poisoned, truth, attack);
            return exported;
          },
          { replace: false },
        );
      } finally {
        attack.dispose?.();
      }
    } finally {
      await clean.close();
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Every sample as `<class>/<file>.png` (lossless: the stored image is the attacker's 8-bit one). */
async function writeImageFolder(
  source: {
    classes: readonly string[];
    labels: Int32Array;
    ids: readonly string[];
    size: number;
    height: number;
    width: number;
    readImages(i: number[]): Promise<Uint8Array>;
  },
  dir: string,
  signal?: AbortSignal,
): Promise<string[]> {
  const files: string[] = [];
  const taken = new Set<string>();
  const bytes = source.height * source.width * 3;
  const batch = 256;
  for (let start = 0; start < source.size; start += batch) {
    signal?.throwIfAborted();
    const indices = Array.from({ length: Math.min(batch, source.size - start) }, (_, k) => start + k);
    const pixels = await source.readImages(indices);
    for (const [k, i] of indices.entries()) {
      // The id's file name, made unique inside its class folder (ids of other layouts may repeat names).
      const stem = basename(source.ids[i], extname(source.ids[i])).replace(/[^\w.-]/g, '_') || `sample-${i}`;
      let file = join(source.classes[source.labels[i]], `${stem}.png`);
      for (let n = 1; taken.has(file); n++) file = join(source.classes[source.labels[i]], `${stem}-${n}.png`);
      taken.add(file);
      await mkdir(dirname(join(dir, file)), { recursive: true });
      await sharp(Buffer.from(pixels.buffer, pixels.byteOffset + k * bytes, bytes), {
        raw: { width: source.width, height: source.height, channels: 3 },
      })
        .png()
        .toFile(join(dir, file));
      files.push(file);
    }
  }
  return files;
}
