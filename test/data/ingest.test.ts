import { expect } from 'chai';
import sharp from 'sharp';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CIFAR10_CLASSES, ensureCifar10 } from '../../data/cifar10.js';
import { compareIds } from '../../data/formats.js';
import { canonicalJson, sha256File, sha256Hex } from '../../data/hash.js';
import { InMemoryImages, openDataset } from '../../data/dataset.js';
import { DatasetError } from '../../data/dataset-error.js';
import type { DatasetSpec } from '../../data/formats.js';
import { ingest, writeDataset } from '../../data/ingest.js';
import { sharedDataDir } from '../../data/paths.js';
import { Rng } from '../../ml/random.js';
import { datasetError } from '../expect-errors.js';

const CLASSES3 = ['bird', 'cat', 'ship'];
const PER_CLASS = 5;

let work: string;
let cifar: { train: string; test: string; classes: string[] };
/** ImageFolder of real CIFAR JPEGs: 3 classes x 5 images. */
let folder: string;

async function makeFolder(dir: string): Promise<string> {
  for (const c of CLASSES3) {
    await mkdir(join(dir, c), { recursive: true });
    for (let i = 0; i < PER_CLASS; i++) {
      const name = `${String(i).padStart(4, '0')}.jpg`;
      await copyFile(join(cifar.train, c, name), join(dir, c, name));
    }
  }
  return dir;
}

let counter = 0;
function fresh(name: string): string {
  counter++;
  return join(work, `${name}-${counter}`);
}

/** Asserts a DatasetError naming `file`, and that nothing was left at outDir or beside it. */
async function expectDatasetError(run: () => Promise<unknown>, file: string, outDir: string, reason: RegExp): Promise<void> {
  const err = await datasetError(run);
  expect(err.file).to.equal(file);
  expect(err.message).to.include(file);
  expect(err.reason).to.match(reason);
  const siblings = await readdir(join(outDir, '..'));
  const base = outDir.split('/').pop()!;
  expect(
    siblings.filter((n) => n.startsWith(base)),
    'output or temp folder left behind',
  ).to.deep.equal([]);
}

describe('data', function () {
  this.timeout(120_000);

  before(async () => {
    cifar = await ensureCifar10();
    work = await mkdtemp(join(tmpdir(), 'data-test-'));
    folder = await makeFolder(join(work, 'folder'));
  });

  after(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  describe('hash', () => {
    it('sha256 known answers, buffer and streamed file agree', async () => {
      expect(sha256Hex('abc')).to.equal('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
      const path = join(work, 'blob.bin');
      const blob = new Uint8Array(3 << 20).map((_, i) => (i * 31) & 255);
      await writeFile(path, blob);
      expect(await sha256File(path)).to.deep.equal({ sha256: sha256Hex(blob), bytes: blob.length });
    });

    it('canonicalJson sorts keys at every level and keeps array order', () => {
      const a = canonicalJson({ b: 1, a: { d: [3, 1], c: 'x' }, e: null, f: -0 });
      const b = canonicalJson({ f: 0, e: null, a: { c: 'x', d: [3, 1] }, b: 1 });
      expect(a).to.equal(b);
      expect(a).to.equal('{"a":{"c":"x","d":[3,1]},"b":1,"e":null,"f":0}');
      expect(canonicalJson([0.1 + 0.2, 1e21, 5e-324])).to.equal('[0.30000000000000004,1e+21,5e-324]');
    });

    it('canonicalJson rejects values JSON would drop or mangle, naming where', () => {
      expect(() => canonicalJson({ a: { b: undefined } })).to.throw(/undefined at \$\.a\.b/);
      expect(() => canonicalJson({ f: () => 1 })).to.throw(/function at \$\.f/);
      expect(() => canonicalJson([1, NaN])).to.throw(/NaN at \$\[1\]/);
      expect(() => canonicalJson({ x: Infinity })).to.throw(/Infinity/);
      expect(() => canonicalJson({ m: new Map() })).to.throw(/Map at \$\.m is not a plain object/);
      expect(() => canonicalJson(new Float32Array(2))).to.throw(/Float32Array/);
    });

    it('compareIds orders digit runs numerically', () => {
      const ids = ['b.bin#10', 'b.bin#2', 'a/10.jpg', 'a/9.jpg', 'a/09.jpg', 'B'];
      expect([...ids].sort(compareIds)).to.deep.equal(['B', 'a/9.jpg', 'a/09.jpg', 'a/10.jpg', 'b.bin#2', 'b.bin#10']);
    });
  });

  describe('ImageFolder ingest', () => {
    it('labels, ids, shape and pixels match sharp decoding directly', async () => {
      const out = fresh('if');
      const progress: string[] = [];
      const m = await ingest({ format: 'imagefolder', root: folder }, out, {
        imageSize: 32,
        shardSize: 4,
        onProgress: (d, _t, p) => progress.push(`${p} ${d}`),
      });
      expect(m.classes).to.deep.equal(CLASSES3);
      expect(m.size).to.equal(15);
      expect(m.shards.map((s) => s.count)).to.deep.equal([4, 4, 4, 3]);
      expect(progress).to.deep.equal(['hash 15', ...Array.from({ length: 15 }, (_, i) => `decode ${i + 1}`)]);
      const ds = await openDataset(out);
      expect(ds.ids.slice(0, 6)).to.deep.equal([
        'bird/0000.jpg',
        'bird/0001.jpg',
        'bird/0002.jpg',
        'bird/0003.jpg',
        'bird/0004.jpg',
        'cat/0000.jpg',
      ]);
      expect(Array.from(ds.labels)).to.deep.equal([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
      expect([ds.height, ds.width]).to.deep.equal([32, 32]);
      const all = await ds.readImages(Array.from({ length: 15 }, (_, i) => i));
      expect(all.length).to.equal(15 * 32 * 32 * 3);
      for (let i = 0; i < 15; i++) {
        const file = join(folder, ds.ids[i]!);
        const direct = await sharp(file).raw().toBuffer(); // 32x32 RGB JPEG: no resize involved
        expect(Buffer.from(all.subarray(i * 3072, (i + 1) * 3072)).equals(direct), ds.ids[i]).to.equal(true);
        expect(ds.contentHashes[i]).to.equal(sha256Hex(await readFile(file)));
      }
      await ds.close();
    });

    it('resizes with fit fill to imageSize', async () => {
      const out = fresh('if16');
      await ingest({ format: 'imagefolder', root: folder }, out, { imageSize: 16 });
      const ds = await openDataset(out);
      const px = await ds.readImages([7]);
      const direct = await sharp(join(folder, ds.ids[7]!)).resize(16, 16, { fit: 'fill' }).raw().toBuffer();
      expect(px.length).to.equal(16 * 16 * 3);
      expect(Buffer.from(px).equals(direct)).to.equal(true);
      await ds.close();
    });

    it('grey and RGBA PNGs become 3-channel RGB (alpha dropped)', async () => {
      const root = fresh('png');
      await mkdir(join(root, 'a'), { recursive: true });
      const grey = Buffer.from(Array.from({ length: 16 }, (_, i) => i * 16));
      await sharp(grey, { raw: { width: 4, height: 4, channels: 1 } })
        .png()
        .toFile(join(root, 'a', 'grey.png'));
      const rgba = Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 7) & 255));
      await sharp(rgba, { raw: { width: 4, height: 4, channels: 4 } })
        .png()
        .toFile(join(root, 'a', 'rgba.png'));
      // Non-square: 'fill' stretches the whole image (a 'cover' crop would drop the side columns).
      const wide = Buffer.from(Array.from({ length: 4 * 8 * 3 }, (_, i) => (i % 24 < 3 || i % 24 >= 21 ? 255 : 0)));
      await sharp(wide, { raw: { width: 8, height: 4, channels: 3 } })
        .png()
        .toFile(join(root, 'a', 'wide.png'));
      const out = fresh('png-out');
      await ingest({ format: 'imagefolder', root }, out, { imageSize: 4 });
      const ds = await openDataset(out);
      expect(ds.ids).to.deep.equal(['a/grey.png', 'a/rgba.png', 'a/wide.png']);
      const stretched = await ds.readImages([2]);
      expect(
        Buffer.from(stretched).equals(
          await sharp(join(root, 'a', 'wide.png'))
            .resize(4, 4, { fit: 'fill' })
            .raw()
            .toBuffer(),
        ),
      ).to.equal(true);
      expect(stretched[0]).to.be.greaterThan(100); // the bright left edge column survives
      const px = await ds.readImages([0, 1]);
      for (let p = 0; p < 16; p++) {
        expect([px[p * 3], px[p * 3 + 1], px[p * 3 + 2]]).to.deep.equal([grey[p], grey[p], grey[p]]);
        expect([px[48 + p * 3], px[48 + p * 3 + 1], px[48 + p * 3 + 2]]).to.deep.equal([rgba[p * 4], rgba[p * 4 + 1], rgba[p * 4 + 2]]);
      }
      await ds.close();
    });

    it('dataset hash is stable across ingests and changes when one file changes', async () => {
      const copy = await makeFolder(fresh('copy'));
      const out1 = fresh('h1');
      const m1 = await ingest({ format: 'imagefolder', root: folder }, out1, { imageSize: 32 });
      const m2 = await ingest({ format: 'imagefolder', root: copy }, fresh('h2'), { imageSize: 32, shardSize: 2 });
      expect(m2.hash).to.equal(m1.hash); // same content, different folder and sharding
      // Reuse: same outDir and same data is recognised without decoding again.
      const calls: string[] = [];
      const again = await ingest({ format: 'imagefolder', root: folder }, out1, {
        imageSize: 32,
        onProgress: (d, t, phase) => calls.push(`${phase} ${d}/${t}`),
      });
      expect(again).to.deep.equal(m1);
      expect(calls).to.deep.equal(['hash 15/15', 'decode 15/15']);
      // Different size: different hash.
      const m16 = await ingest({ format: 'imagefolder', root: copy }, fresh('h16'), { imageSize: 16 });
      expect(m16.hash).to.not.equal(m1.hash);
      // One file replaced by another image: different hash, and the old output is replaced.
      await copyFile(join(cifar.train, 'cat', '0100.jpg'), join(copy, 'cat', '0002.jpg'));
      const m3 = await ingest({ format: 'imagefolder', root: copy }, out1, { imageSize: 32 });
      expect(m3.hash).to.not.equal(m1.hash);
      const ds = await openDataset(out1);
      expect(ds.manifest.hash).to.equal(m3.hash);
      const px = await ds.readImages([ds.ids.indexOf('cat/0002.jpg')]);
      expect(
        Buffer.from(px).equals(
          await sharp(join(cifar.train, 'cat', '0100.jpg'))
            .raw()
            .toBuffer(),
        ),
      ).to.equal(true);
      await ds.close();
    });
  });

  describe('shared CIFAR-10', () => {
    it('train and test splits ingest with limitPerClass, classes in README order', async () => {
      for (const split of [cifar.train, cifar.test]) {
        const out = fresh('cifar');
        const m = await ingest({ format: 'imagefolder', root: split }, out, { imageSize: 32, limitPerClass: 20 });
        expect(m.classes).to.deep.equal([...CIFAR10_CLASSES]);
        expect(m.size).to.equal(200);
        const ds = await openDataset(out);
        for (let c = 0; c < 10; c++) {
          const ids = ds.ids.filter((_, i) => ds.labels[i] === c);
          expect(ids).to.deep.equal(Array.from({ length: 20 }, (_, i) => `${CIFAR10_CLASSES[c]}/${String(i).padStart(4, '0')}.jpg`));
        }
        await ds.close();
      }
    });
  });

  describe('ensureCifar10', () => {
    const sharedArchive = join(sharedDataDir(), 'cifar10-jpg.tar.gz');

    it('extracts the shared archive into a fresh cache folder, then finds it there', async () => {
      const cache = fresh('cache');
      const got = await ensureCifar10(cache);
      expect(got.train).to.equal(join(cache, 'cifar10-jpg', 'train'));
      expect(await readdir(cache)).to.deep.equal(['cifar10-jpg']); // no temp folder left
      expect((await readdir(join(got.test, 'truck'))).length).to.equal(900);
      expect(await ensureCifar10(cache)).to.deep.equal(got);
      await rm(cache, { recursive: true, force: true });
    });

    it('names the archive and the variable when the archive is missing', async () => {
      const saved = process.env.BACKDOOR_AUDIT_SHARED_DATA;
      process.env.BACKDOOR_AUDIT_SHARED_DATA = join(work, 'nowhere');
      try {
        let err: unknown;
        await ensureCifar10(fresh('cache-missing')).catch((e: unknown) => (err = e));
        expect((err as Error).message)
          .to.include(join(work, 'nowhere', 'cifar10-jpg.tar.gz'))
          .and.include(`BACKDOOR_AUDIT_SHARED_DATA=${join(work, 'nowhere')}`);
        // The variable names the folder; the archive itself is refused with a reason.
        process.env.BACKDOOR_AUDIT_SHARED_DATA = sharedArchive;
        err = undefined;
        await ensureCifar10(fresh('cache-file')).catch((e: unknown) => (err = e));
        expect((err as Error).message).to.match(/BACKDOOR_AUDIT_SHARED_DATA=.*cifar10-jpg\.tar\.gz is a file; it must name the folder/);
      } finally {
        if (saved === undefined) delete process.env.BACKDOOR_AUDIT_SHARED_DATA;
        else process.env.BACKDOOR_AUDIT_SHARED_DATA = saved;
      }
    });
  });

  describe('CIFAR binary', () => {
    it('round trips records: CHW -> HWC, labels, ids, record hashes', async () => {
      const dir = fresh('bin');
      await mkdir(dir);
      const rec = (label: number, seed: number): Uint8Array => {
        const r = new Uint8Array(3073);
        r[0] = label;
        for (let i = 1; i < 3073; i++) r[i] = (i * seed + label) & 255;
        return r;
      };
      const r0 = rec(3, 7);
      const r1 = rec(9, 13);
      const file = join(dir, 'data_batch_1.bin');
      await writeFile(file, Buffer.concat([r0, r1]));
      const out = fresh('bin-out');
      const m = await ingest({ format: 'cifar-binary', files: [file] }, out, { imageSize: 32 });
      expect(m.format).to.equal('cifar-binary');
      expect(m.classes).to.deep.equal([...CIFAR10_CLASSES]);
      const ds = await openDataset(out);
      expect(ds.ids).to.deep.equal(['data_batch_1.bin#0', 'data_batch_1.bin#1']);
      expect(Array.from(ds.labels)).to.deep.equal([3, 9]);
      expect(ds.contentHashes).to.deep.equal([sha256Hex(r0), sha256Hex(r1)]);
      const px = await ds.readImages([1, 0]);
      for (const [k, r] of [
        [0, r1],
        [1, r0],
      ] as const) {
        for (const p of [0, 1, 33, 1023]) {
          for (let ch = 0; ch < 3; ch++) expect(px[k * 3072 + p * 3 + ch]).to.equal(r[1 + ch * 1024 + p]);
        }
      }
      await ds.close();
    });
  });

  describe('manifests', () => {
    it('CSV (names, indices, quoting) and JSONL give the same samples as the folder', async () => {
      const ref = fresh('ref');
      await ingest({ format: 'imagefolder', root: folder }, ref, { imageSize: 32 });
      const refDs = await openDataset(ref);
      const all = Array.from({ length: refDs.size }, (_, i) => i);
      const refPx = await refDs.readImages(all);

      const rows = refDs.ids.map((id, i) => ({ id, label: refDs.labels[i]! }));
      const csv = ['label,path,extra', ...rows.map((r, i) => `${i % 2 ? r.label : CLASSES3[r.label]},"${r.id}","x, ""y"""`)].join('\r\n');
      const csvPath = join(folder, 'list.csv');
      // Not beside the outputs: a manifest's folder is part of its dataset, which is never written to.
      const jsonlPath = join(await mkdtemp(join(work, 'lists-')), 'list.jsonl');
      await writeFile(csvPath, csv + '\r\n');
      await writeFile(jsonlPath, rows.map((r) => JSON.stringify({ path: r.id, label: CLASSES3[r.label] })).join('\n'));
      const specs: DatasetSpec[] = [
        { format: 'manifest', path: csvPath, classes: CLASSES3 }, // root defaults to the manifest's folder
        { format: 'manifest', path: jsonlPath, root: folder },
      ];
      for (const spec of specs) {
        const out = fresh('man');
        const m = await ingest(spec, out, { imageSize: 32 });
        expect(m.format).to.equal('manifest');
        const ds = await openDataset(out);
        expect(ds.classes).to.deep.equal(CLASSES3);
        expect(ds.ids).to.deep.equal(refDs.ids);
        expect(Array.from(ds.labels)).to.deep.equal(Array.from(refDs.labels));
        expect(Buffer.from(await ds.readImages(all)).equals(Buffer.from(refPx))).to.equal(true);
        expect(m.hash).to.equal(refDs.manifest.hash); // same samples, same classes, same size
        await ds.close();
      }
      await rm(csvPath);
      await refDs.close();
    });
  });

  describe('openDataset', () => {
    it('random access returns the same bytes as a sequential read', async () => {
      const out = fresh('ra');
      await ingest({ format: 'imagefolder', root: cifar.test }, out, { imageSize: 32, limitPerClass: 10, shardSize: 7 });
      const ds = await openDataset(out);
      const n = ds.size;
      const seq = await ds.readImages(Array.from({ length: n }, (_, i) => i));
      const perm = new Rng(5).permutation(n);
      const idx = [...perm.slice(0, 40), 3, 3, 4, 5, 6, 7, 8]; // repeats and a run across a shard boundary
      const rnd = await ds.readImages(idx);
      for (let k = 0; k < idx.length; k++) {
        const i = idx[k]!;
        expect(
          Buffer.from(rnd.subarray(k * 3072, (k + 1) * 3072)).equals(Buffer.from(seq.subarray(i * 3072, (i + 1) * 3072))),
          `index ${i}`,
        ).to.equal(true);
      }
      // Concurrent reads across more shards than open handles are kept.
      const parts = await Promise.all(Array.from({ length: 20 }, (_, s) => ds.readImages([n - 1 - s * 4, s * 5])));
      parts.forEach((p, s) => {
        const a = n - 1 - s * 4;
        const b = s * 5;
        expect(
          Buffer.from(p).equals(Buffer.concat([seq.subarray(a * 3072, (a + 1) * 3072), seq.subarray(b * 3072, (b + 1) * 3072)])),
        ).to.equal(true);
      });
      let rangeErr: unknown;
      await ds.readImages([n]).catch((e: unknown) => (rangeErr = e));
      expect(rangeErr).to.be.instanceOf(RangeError);
      await ds.verify();
      await ds.close();
    });

    it('names the shard that is missing, truncated or corrupted', async () => {
      const out = fresh('bad-shard');
      const m = await ingest({ format: 'imagefolder', root: folder }, out, { imageSize: 32, shardSize: 8 });
      const shard = join(out, m.shards[1]!.file);
      const bytes = await readFile(shard);
      bytes[5] = bytes[5]! ^ 0xff;
      await writeFile(shard, bytes);
      const ds = await openDataset(out);
      let err: unknown;
      await ds.verify().catch((e: unknown) => (err = e));
      expect(err).to.be.instanceOf(DatasetError);
      expect((err as DatasetError).file).to.equal(shard);
      await ds.close();
      await truncate(shard, 100);
      await expectOpenError(out, shard, /expected/);
      await rm(shard);
      await expectOpenError(out, shard, /missing/);
      await expectOpenError(work, join(work, 'dataset.json'), /not found/);
    });
  });

  describe('writeDataset', () => {
    it('round trips an InMemoryImages source', async () => {
      const n = 10;
      const h = 5;
      const w = 3;
      const rng = new Rng(11);
      const pixels = new Uint8Array(n * h * w * 3).map(() => rng.int(256));
      const labels = Int32Array.from({ length: n }, (_, i) => i % 3);
      const ids = Array.from({ length: n }, (_, i) => `poisoned/${i}.png`);
      const src = new InMemoryImages({ classes: ['x', 'y', 'z'], height: h, width: w, labels, ids, pixels });
      const out = fresh('wd');
      const m = await writeDataset(src, out, 'mem');
      expect(m).to.include({ name: 'mem', format: 'pixels', height: h, width: w, size: n });
      const ds = await openDataset(out);
      expect(ds.ids).to.deep.equal(ids);
      expect(Array.from(ds.labels)).to.deep.equal(Array.from(labels));
      expect(Buffer.from(await ds.readImages(Array.from({ length: n }, (_, i) => i))).equals(Buffer.from(pixels))).to.equal(true);
      expect(ds.contentHashes[4]).to.equal(
        createHash('sha256')
          .update(pixels.subarray(4 * 45, 5 * 45))
          .digest('hex'),
      );
      await ds.close();
      // Writing the same source again reuses the existing folder; a changed pixel changes the hash.
      expect((await writeDataset(src, out, 'mem')).hash).to.equal(m.hash);
      pixels[0] = pixels[0]! ^ 1;
      expect((await writeDataset(src, fresh('wd2'), 'mem')).hash).to.not.equal(m.hash);
      expect(() => new InMemoryImages({ classes: ['x'], height: h, width: w, labels, ids, pixels })).to.throw(/outside 1 classes/);
    });
  });

  describe('bad input', () => {
    it('corrupt (truncated) JPEG', async () => {
      const root = await makeFolder(fresh('corrupt'));
      const bad = join(root, 'cat', '0003.jpg');
      const bytes = await readFile(bad);
      await writeFile(bad, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
      const out = fresh('corrupt-out');
      await expectDatasetError(
        () => ingest({ format: 'imagefolder', root }, out, { imageSize: 32, shardSize: 2 }),
        bad,
        out,
        /cannot decode image/,
      );
    });

    it('empty class folder', async () => {
      const root = await makeFolder(fresh('empty'));
      await mkdir(join(root, 'dog'));
      const out = fresh('empty-out');
      await expectDatasetError(() => ingest({ format: 'imagefolder', root }, out, { imageSize: 32 }), join(root, 'dog'), out, /no images/);
    });

    it('non-image file in a class folder says how to exclude it', async () => {
      const root = await makeFolder(fresh('notes'));
      await writeFile(join(root, 'cat', 'notes.txt'), 'hello');
      await writeFile(join(root, 'cat', '.DS_Store'), 'hidden files are skipped');
      const out = fresh('notes-out');
      await expectDatasetError(
        () => ingest({ format: 'imagefolder', root }, out, { imageSize: 32 }),
        join(root, 'cat', 'notes.txt'),
        out,
        /not an image.*move it out.*manifest/,
      );
    });

    it('manifest label not in the class list', async () => {
      const path = join(folder, 'bad-label.jsonl');
      await writeFile(
        path,
        `${JSON.stringify({ path: 'cat/0000.jpg', label: 'cat' })}\n${JSON.stringify({ path: 'cat/0001.jpg', label: 'dog' })}\n`,
      );
      const out = fresh('label-out');
      try {
        await expectDatasetError(
          () => ingest({ format: 'manifest', path, classes: CLASSES3 }, out, { imageSize: 32 }),
          path,
          out,
          /line 2: label "dog" is not in the class list/,
        );
        await writeFile(path, JSON.stringify({ path: 'cat/0000.jpg', label: 3 }));
        await expectDatasetError(
          () => ingest({ format: 'manifest', path, classes: CLASSES3 }, out, { imageSize: 32 }),
          path,
          out,
          /label 3 is not in the class list/,
        );
      } finally {
        await rm(path);
      }
    });

    it('CSV manifest errors name the line a record starts on', async () => {
      const path = join(folder, 'bad.csv');
      const out = fresh('csv-out');
      try {
        await writeFile(path, 'path,label\ncat/0000.jpg,"c\na\nt"\n"cat/\n0001.jpg"\n');
        await expectDatasetError(
          () => ingest({ format: 'manifest', path }, out, { imageSize: 32 }),
          path,
          out,
          /^line 5: missing path or label/,
        );
        await writeFile(path, 'path,label\ncat/0000.jpg,cat\n"cat/0001.jpg,cat\n');
        await expectDatasetError(
          () => ingest({ format: 'manifest', path }, out, { imageSize: 32 }),
          path,
          out,
          /^line 3: .*Quote Not Closed/,
        );
        await writeFile(path, 'file,class\ncat/0000.jpg,cat\n');
        await expectDatasetError(
          () => ingest({ format: 'manifest', path }, out, { imageSize: 32 }),
          path,
          out,
          /header line with columns path and label/,
        );
      } finally {
        await rm(path);
      }
    });

    it('manifest path escaping the dataset root (relative and absolute)', async () => {
      const dir = fresh('escape');
      await mkdir(join(dir, 'root'), { recursive: true });
      await copyFile(join(folder, 'cat', '0000.jpg'), join(dir, 'outside.jpg'));
      const path = join(dir, 'root', 'list.csv');
      const out = fresh('escape-out');
      for (const p of ['../outside.jpg', join(dir, 'outside.jpg')]) {
        await writeFile(path, `path,label\n${p},cat\n`);
        await expectDatasetError(
          () => ingest({ format: 'manifest', path }, out, { imageSize: 32 }),
          path,
          out,
          /line 2: path .* is outside the dataset root/,
        );
      }
    });

    it('manifest listing a missing file', async () => {
      const path = join(await mkdtemp(join(work, 'lists-')), 'missing.csv');
      await writeFile(path, 'path,label\ncat/0000.jpg,cat\ncat/9999.jpg,cat\n');
      const out = fresh('missing-out');
      await expectDatasetError(
        () => ingest({ format: 'manifest', path, root: folder }, out, { imageSize: 32 }),
        join(folder, 'cat', '9999.jpg'),
        out,
        /file not found.*line 3/,
      );
    });

    it('wrong-size CIFAR binary file', async () => {
      const file = join(await mkdtemp(join(work, 'bins-')), 'short.bin');
      await writeFile(file, new Uint8Array(3073 * 2 - 1));
      const out = fresh('bin-bad-out');
      await expectDatasetError(
        () => ingest({ format: 'cifar-binary', files: [file] }, out, { imageSize: 32 }),
        file,
        out,
        /not a positive multiple of the 3073-byte/,
      );
    });

    it('refuses to replace an output folder that is not a dataset', async () => {
      const out = fresh('not-dataset');
      await mkdir(out);
      await writeFile(join(out, 'precious.txt'), 'keep me');
      let err: unknown;
      await ingest({ format: 'imagefolder', root: folder }, out, { imageSize: 32 }).catch((e: unknown) => (err = e));
      expect(err).to.be.instanceOf(DatasetError);
      expect((err as DatasetError).file).to.equal(out);
      expect(await readFile(join(out, 'precious.txt'), 'utf8')).to.equal('keep me');
      err = undefined;
      await ingest({ format: 'imagefolder', root: folder }, join(folder, 'out'), { imageSize: 32 }).catch((e: unknown) => (err = e));
      expect((err as DatasetError).reason).to.match(/inside the input dataset/);
    });

    it('abort stops the ingest and leaves nothing', async () => {
      const ctrl = new AbortController();
      const out = fresh('abort-out');
      let err: unknown;
      await ingest({ format: 'imagefolder', root: folder }, out, {
        imageSize: 32,
        signal: ctrl.signal,
        onProgress: (d, _t, phase) => phase === 'decode' && d === 3 && ctrl.abort(new Error('stop now')),
      }).catch((e: unknown) => (err = e));
      expect((err as Error).message).to.equal('stop now');
      const siblings = (await readdir(work)).filter((n) => n.startsWith(out.split('/').pop()!));
      expect(siblings).to.deep.equal([]);
    });
  });
});

async function expectOpenError(dir: string, file: string, reason: RegExp): Promise<void> {
  let err: unknown;
  await openDataset(dir).catch((e: unknown) => (err = e));
  expect(err).to.be.instanceOf(DatasetError);
  expect((err as DatasetError).file).to.equal(file);
  expect((err as DatasetError).reason).to.match(reason);
}
