// Issue 13, "input never touched": the output, the artifact store and the state folder are kept
// out of every dataset folder (by real path); symbolic links out of a dataset are refused unless
// the source opts in; decoding stays inside a memory budget; a class too small for its flow is
// reported as a warning.
import { expect } from 'chai';
import sharp from 'sharp';
import { createHash } from 'node:crypto';
import { copyFile, lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArtifactStore } from '../../data/artifacts.js';
import { ensureCifar10 } from '../../data/cifar10.js';
import { datasetFingerprint } from '../../data/fingerprint.js';
import { InMemoryImages, openDataset } from '../../data/dataset.js';
import { DatasetError } from '../../data/dataset-error.js';
import { DEFAULT_DECODE_MEMORY, decodeLimits, imageHeader, quickImageHeader } from '../../data/decode.js';
import type { DatasetSpec } from '../../data/formats.js';
import { ingest, writeDataset } from '../../data/ingest.js';
import { parsePipeline } from '../../client/pipeline.js';
import { datasetError, pipelineProblems } from '../expect-errors.js';
import { StageEngine } from '../../activities/engine.js';
import type { StageRuntime } from '../../activities/stage.js';
import { writeMatrix } from '../../activities/io.js';
import { MIN_FLOW_SAMPLES, smallClassWarning } from '../../activities/stages/flow.js';
import { STAGE_IMPLS } from '../../activities/stages/index.js';
import { matrix } from '../../ml/matrix.js';
import { Rng } from '../../ml/random.js';

const CLASSES = ['bird', 'cat'];
let work: string;
let cifarTrain: string;

/** An ImageFolder of real CIFAR JPEGs: bird/ and cat/, 3 images each. */
async function makeFolder(dir: string): Promise<string> {
  for (const c of CLASSES) {
    await mkdir(join(dir, c), { recursive: true });
    for (let i = 0; i < 3; i++) await copyFile(join(cifarTrain, c, `000${i}.jpg`), join(dir, c, `000${i}.jpg`));
  }
  return dir;
}

let counter = 0;
const fresh = (name: string): string => join(work, `${name}-${++counter}`);

/** sha256 over every entry under `dir`: names, file bytes, link targets. */
async function treeHash(dir: string): Promise<string> {
  const h = createHash('sha256');
  async function walk(d: string, rel: string): Promise<void> {
    const names = (await readdir(d)).sort();
    for (const n of names) {
      const p = join(d, n);
      const st = await lstat(p);
      if (st.isSymbolicLink()) h.update(`L ${rel}${n} -> ${await readlink(p)}\n`);
      else if (st.isDirectory()) {
        h.update(`D ${rel}${n}\n`);
        await walk(p, `${rel}${n}/`);
      } else h.update(`F ${rel}${n} `).update(await readFile(p));
    }
  }
  await walk(dir, '');
  return h.digest('hex');
}

describe('input never touched', function () {
  this.timeout(120_000);

  before(async () => {
    cifarTrain = (await ensureCifar10()).train;
    work = await mkdtemp(join(tmpdir(), 'safety-test-'));
  });
  after(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  describe('output, store and state folders outside every dataset', () => {
    const yaml = (dataset: string, output: string, extra = '') =>
      `name: x\ndataset: ${dataset}\n${extra}output: ${output}\naudit: {flow: {epochs: 1}}\n`;

    it('refuses an output inside, equal to or containing the dataset root, naming the file and the output line', async () => {
      const dir = fresh('p');
      const root = await makeFolder(join(dir, 'data', 'train'));
      const file = join(dir, 'audit.yaml');
      const before = await treeHash(root);
      const ds = '{format: imagefolder, root: data/train, imageSize: 32}';
      const cases: [string, RegExp][] = [
        ['data/train/cat', /is inside the training set's folder/],
        ['data/train/results', /is inside the training set's folder/],
        ['data/train', /is the training set's folder/],
        ['./data/train/', /is the training set's folder/],
        ['data', /contains the training set's folder/],
        ['.', /contains the training set's folder/],
      ];
      for (const [output, how] of cases) {
        const list = await pipelineProblems(yaml(ds, output), file);
        expect(list, output).to.have.length(1);
        expect(list[0], output).to.match(new RegExp(`^${file}:3:1: output: output folder `));
        expect(list[0], output).to.match(how);
        expect(list[0], output).to.include(`${root} (dataset.root)`).and.include('choose an output folder outside it');
      }
      // Beside the dataset is fine.
      expect((await parsePipeline(yaml(ds, 'out'), file)).output).to.equal(join(dir, 'out'));
      expect(await treeHash(root)).to.equal(before);
    });

    it('compares real paths: an output reached through a link into the dataset, or a dataset named through a link', async () => {
      const dir = fresh('p-links');
      const root = await makeFolder(join(dir, 'data'));
      const file = join(dir, 'audit.yaml');
      await symlink(join(root, 'cat'), join(dir, 'cats-link'));
      await symlink(root, join(dir, 'data-link'));
      const before = await treeHash(root);
      let list = await pipelineProblems(yaml('{format: imagefolder, root: data, imageSize: 32}', 'cats-link/out'), file);
      expect(list).to.have.length(1);
      expect(list[0]).to.match(new RegExp(`^${file}:3:1: output: output folder ${join(dir, 'cats-link', 'out')} is inside`));
      list = await pipelineProblems(yaml('{format: imagefolder, root: data-link, imageSize: 32}', 'data/out'), file);
      expect(list[0]).to.match(/:3:1: output: .* is inside the training set's folder/);
      expect(await treeHash(root)).to.equal(before);
    });

    it('covers the test set, a manifest (its root, or its own folder without one) and the folders of CIFAR binary files', async () => {
      const dir = fresh('p-formats');
      const file = join(dir, 'audit.yaml');
      const train = await makeFolder(join(dir, 'train'));
      const test = await makeFolder(join(dir, 'test'));
      await mkdir(join(dir, 'lists'));
      await writeFile(join(dir, 'lists', 'train.csv'), 'path,label\ncat/0000.jpg,cat\n');
      await mkdir(join(dir, 'bins'));
      await writeFile(join(dir, 'bins', 'data_batch_1.bin'), new Uint8Array(3073));
      const trainSet = '{format: imagefolder, root: train, imageSize: 32}';
      const testSet = 'testSet: {format: imagefolder, root: test}\n';
      let list = await pipelineProblems(yaml(trainSet, 'test/out', testSet), file);
      expect(list).to.deep.equal([
        `${file}:4:1: output: output folder ${join(dir, 'test', 'out')} is inside the test set's folder ${test} (testSet.root); ` +
          'input datasets are never written to: choose an output folder outside it',
      ]);
      const manifest = '{format: manifest, path: lists/train.csv, root: train, imageSize: 32}';
      // With a root, an output beside the manifest file touches no input.
      expect((await parsePipeline(yaml(manifest, 'lists/out'), file)).output).to.equal(join(dir, 'lists', 'out'));
      const rootless = '{format: manifest, path: lists/train.csv, imageSize: 32}';
      list = await pipelineProblems(yaml(rootless, 'lists/out'), file);
      expect(list).to.have.length(1);
      expect(list[0]).to.include(`is inside the training set's folder ${join(dir, 'lists')} (dataset.path)`);
      list = await pipelineProblems(yaml(manifest, 'train/out'), file);
      expect(list[0]).to.include(`is inside the training set's folder ${train} (dataset.root)`);
      list = await pipelineProblems(yaml('{format: cifar-binary, files: [bins/data_batch_1.bin], imageSize: 32}', 'bins'), file);
      expect(list[0]).to.match(/:3:1: output: .* is the training set's folder .*bins \(dataset\.files\.0\)/);
      // The shared CIFAR-10 copy's folder counts too, without extracting anything.
      list = await pipelineProblems(yaml('{format: cifar10, split: train, imageSize: 32}', cifarTrain), file);
      expect(list[0]).to.match(/:3:1: output: .* is the training set's folder .*cifar10-jpg\/train \(dataset\.split\)/);
    });

    it('refuses an artifact store or state folder inside or around a dataset, pointing at the dataset', async () => {
      const dir = fresh('p-store');
      const root = await makeFolder(join(dir, 'data'));
      const file = join(dir, 'audit.yaml');
      const saved = { store: process.env.BACKDOOR_AUDIT_STORE, state: process.env.BACKDOOR_AUDIT_STATE };
      const text = yaml('{format: imagefolder, root: data, imageSize: 32}', 'out');
      try {
        process.env.BACKDOOR_AUDIT_STORE = join(root, '.artifacts');
        let list = await pipelineProblems(text, file);
        expect(list).to.have.length(1);
        expect(list[0]).to.match(new RegExp(`^${file}:2:\\d+: dataset\\.root: artifact store ${join(root, '.artifacts')} is inside`));
        expect(list[0]).to.include('set BACKDOOR_AUDIT_STORE');
        delete process.env.BACKDOOR_AUDIT_STORE;
        process.env.BACKDOOR_AUDIT_STATE = dir; // contains the dataset (and the default store below it)
        list = await pipelineProblems(text, file);
        expect(list.some((l) => /dataset\.root: state folder .* contains the training set's folder/.test(l))).to.equal(true);
      } finally {
        for (const [name, value] of [
          ['BACKDOOR_AUDIT_STORE', saved.store],
          ['BACKDOOR_AUDIT_STATE', saved.state],
        ] as const) {
          if (value === undefined) delete process.env[name];
          else process.env[name] = value;
        }
      }
    });

    it('ingest itself refuses an output inside the dataset by real path, and writes nothing', async () => {
      const root = await makeFolder(fresh('ingest-root'));
      const link = fresh('link-to-cat');
      await symlink(join(root, 'cat'), link);
      const before = await treeHash(root);
      for (const out of [join(link, 'ds'), join(root, 'ds'), root]) {
        const err = await datasetError(() => ingest({ format: 'imagefolder', root }, out, { imageSize: 32 }));
        expect(err.file).to.equal(out);
        expect(err.reason).to.match(/(is|is inside) the input dataset folder/);
      }
      expect(await treeHash(root)).to.equal(before);
    });
  });

  describe('symbolic links', () => {
    it('refuses a link out of an ImageFolder root, naming the link and its target; accepts it with the opt-in', async () => {
      const root = await makeFolder(fresh('links'));
      const outside = join(fresh('elsewhere'), 'secret.jpg');
      await mkdir(join(outside, '..'), { recursive: true });
      await copyFile(join(cifarTrain, 'dog', '0000.jpg'), outside);
      const link = join(root, 'cat', 'x.jpg');
      await symlink(outside, link);
      const before = await treeHash(root);

      const out = fresh('links-out');
      const err = await datasetError(() => ingest({ format: 'imagefolder', root }, out, { imageSize: 32 }));
      expect(err.file).to.equal(link);
      expect(err.reason).to.include(`symbolic link to ${outside}, outside the dataset root ${root}`);
      expect(err.reason).to.include('followSymlinksOutsideRoot: true');
      // The fingerprint (the workflow id, the ingest's cache key) refuses it too: it lists the same samples.
      await datasetError(() => datasetFingerprint({ format: 'imagefolder', root }));

      const spec: DatasetSpec = { format: 'imagefolder', root, followSymlinksOutsideRoot: true };
      const m = await ingest(spec, out, { imageSize: 32 });
      expect(m.size).to.equal(7);
      const ds = await openDataset(out);
      const i = ds.ids.indexOf('cat/x.jpg');
      expect(Buffer.from(await ds.readImages([i])).equals(await sharp(outside).raw().toBuffer())).to.equal(true);
      await ds.close();
      expect(await treeHash(root)).to.equal(before);
    });

    it('accepts links that stay inside the root (files and folders) and refuses one class folder linked from outside', async () => {
      const root = await makeFolder(fresh('inner-links'));
      await symlink('../bird/0000.jpg', join(root, 'cat', 'bird-as-cat.jpg'));
      await mkdir(join(root, 'cat', 'more'));
      await symlink('../../bird', join(root, 'cat', 'more', 'birds'));
      const out = fresh('inner-out');
      const m = await ingest({ format: 'imagefolder', root }, out, { imageSize: 32 });
      const ds = await openDataset(out);
      expect(ds.ids).to.include.members(['cat/bird-as-cat.jpg', 'cat/more/birds/0002.jpg']);
      expect(m.size).to.equal(6 + 1 + 3);
      await ds.close();

      const outsideClass = await makeFolder(fresh('other-set'));
      await symlink(join(outsideClass, 'cat'), join(root, 'dog'));
      const err = await datasetError(() => ingest({ format: 'imagefolder', root }, fresh('class-link-out'), { imageSize: 32 }));
      expect(err.file).to.equal(join(root, 'dog'));
      expect(err.reason).to.match(/^symbolic link to .*other-set-\d+\/cat, outside the dataset root/);
    });

    it('refuses a link loop and a broken link, naming them', async () => {
      const root = await makeFolder(fresh('loop'));
      await symlink('..', join(root, 'cat', 'up'));
      let err = await datasetError(() => ingest({ format: 'imagefolder', root }, fresh('loop-out'), { imageSize: 32 }));
      expect(err.file).to.equal(join(root, 'cat', 'up'));
      expect(err.reason).to.match(/symbolic link loop/);
      await rm(join(root, 'cat', 'up'));
      await symlink('nowhere.jpg', join(root, 'cat', 'gone.jpg'));
      err = await datasetError(() => ingest({ format: 'imagefolder', root }, fresh('broken-out'), { imageSize: 32 }));
      expect(err.file).to.equal(join(root, 'cat', 'gone.jpg'));
      expect(err.reason).to.match(/^broken symbolic link to nowhere\.jpg/);
    });

    it('refuses a manifest path that leaves the root through a link (the text stays inside), naming the link', async () => {
      const dir = fresh('man-links');
      const root = await makeFolder(join(dir, 'root'));
      const other = await makeFolder(join(dir, 'other'));
      await symlink(join(other, 'cat'), join(root, 'door'));
      const manifest = join(dir, 'lists', 'train.csv');
      await mkdir(join(dir, 'lists'));
      await writeFile(manifest, 'path,label\ncat/0000.jpg,cat\ndoor/0001.jpg,cat\n');
      const spec: DatasetSpec = { format: 'manifest', path: manifest, root };
      const err = await datasetError(() => ingest(spec, fresh('man-out'), { imageSize: 32 }));
      expect(err.file).to.equal(join(root, 'door'));
      expect(err.reason).to.include(
        `symbolic link to ${join(other, 'cat')}, outside the dataset root ${root} (listed in ${manifest}, line 3)`,
      );
      const m = await ingest({ ...spec, followSymlinksOutsideRoot: true }, fresh('man-out'), { imageSize: 32 });
      expect(m.size).to.equal(2);
    });

    it('the pipeline file takes followSymlinksOutsideRoot for imagefolder and manifest sources only', async () => {
      const dir = fresh('p-follow');
      await makeFolder(join(dir, 'data'));
      const file = join(dir, 'a.yaml');
      const p = await parsePipeline(
        'name: x\ndataset: {format: imagefolder, root: data, imageSize: 32, followSymlinksOutsideRoot: true}\noutput: out\n',
        file,
      );
      expect(p.dataset.source).to.deep.equal({ format: 'imagefolder', root: join(dir, 'data'), followSymlinksOutsideRoot: true });
      // Left out (or false), the source is what it was before the option existed: same cache keys.
      const q = await parsePipeline('name: x\ndataset: {format: imagefolder, root: data, imageSize: 32}\noutput: out\n', file);
      expect(q.dataset.source).to.deep.equal({ format: 'imagefolder', root: join(dir, 'data') });
      const list = await pipelineProblems(
        'name: x\ndataset: {format: cifar10, split: train, imageSize: 32, followSymlinksOutsideRoot: true}\noutput: out\n',
        file,
      );
      expect(list.some((l) => /dataset: "followSymlinksOutsideRoot" not allowed with format "cifar10"/.test(l))).to.equal(true);
    });
  });

  describe('decode memory', () => {
    it('derives the decode concurrency and the per-image share from the budget', () => {
      expect(decodeLimits(DEFAULT_DECODE_MEMORY)).to.deep.equal({ memory: 2 ** 30, concurrency: 4, perImage: 2 ** 28 });
      expect(decodeLimits(128 * 2 ** 20)).to.deep.include({ concurrency: 2, perImage: 64 * 2 ** 20 });
      expect(decodeLimits(32 * 2 ** 20)).to.deep.include({ concurrency: 1, perImage: 32 * 2 ** 20 });
      expect(() => decodeLimits(1000)).to.throw(/at least 1 MiB/);
    });

    it('reads PNG, JPEG and WebP headers directly, agreeing with sharp, and asks sharp for anything else', async () => {
      // sharp creates 3 or 4 bands; grey images are converted from those (alpha kept).
      const base = (channels: 1 | 2 | 3 | 4) => {
        const img = sharp({
          create: { width: 37, height: 23, channels: channels % 2 ? 3 : 4, background: { r: 10, g: 20, b: 30, alpha: 0.5 } },
        });
        return channels < 3 ? img.toColourspace('b-w') : img;
      };
      const cases: [string, Promise<Buffer>, number, number][] = [
        // name, image, channels libvips decodes to, bytes per sample
        ['png grey', base(1).png().toBuffer(), 1, 1],
        ['png grey+alpha', base(2).png().toBuffer(), 2, 1],
        ['png rgb', base(3).png().toBuffer(), 3, 1],
        ['png rgba interlaced', base(4).png({ progressive: true }).toBuffer(), 4, 1],
        ['png 16-bit', base(3).toColourspace('rgb16').png().toBuffer(), 3, 2],
        ['jpeg', base(3).jpeg().toBuffer(), 3, 1],
        ['jpeg progressive with exif', base(3).jpeg({ progressive: true }).withMetadata({ orientation: 6 }).toBuffer(), 3, 1],
        ['jpeg grey', base(1).jpeg().toBuffer(), 1, 1],
        ['webp lossy', base(3).webp().toBuffer(), 3, 1],
        ['webp lossless', base(3).webp({ lossless: true }).toBuffer(), 3, 1],
        ['webp alpha (VP8X)', base(4).webp().toBuffer(), 4, 1],
        ['webp lossless alpha', base(4).webp({ lossless: true }).toBuffer(), 4, 1],
      ];
      for (const [name, image, channels, sampleBytes] of cases) {
        const bytes = await image;
        const meta = await sharp(bytes).metadata();
        expect(quickImageHeader(bytes), name).to.deep.equal({ width: 37, height: 23, channels, sampleBytes });
        expect([meta.width, meta.height, meta.channels], name).to.deep.equal([37, 23, channels]);
      }
      // A palette PNG counts 4 channels (it may carry transparency): one more than sharp says without it.
      expect(quickImageHeader(await base(3).png({ palette: true }).toBuffer())).to.deep.include({ channels: 4 });
      // Any other format, whatever the file is called, goes to sharp's metadata().
      const tiff = await base(3).tiff().toBuffer();
      expect(quickImageHeader(tiff)).to.equal(undefined);
      expect(await imageHeader(tiff, 'x.png')).to.deep.equal({ width: 37, height: 23, channels: 3, sampleBytes: 1 });
      const err = await datasetError(() => imageHeader(new TextEncoder().encode('not an image at all'), '/d/a/x.png'));
      expect(err.file).to.equal('/d/a/x.png');
      expect(err.reason).to.match(/^cannot decode image/);
    });

    it('refuses a PNG over the default limit from its header alone, naming the file and its size', async () => {
      const root = fresh('huge');
      await makeFolder(root);
      // 9500x9500 RGB (90 megapixels, 271 MB decoded) is over the 256 MiB share of the default
      // 1 GiB. Only the first 4 KiB are kept: the header is intact, the pixels are not, so the
      // refusal cannot come from decoding it (that would fail with "cannot decode image").
      const png = await sharp({ create: { width: 9500, height: 9500, channels: 3, background: '#0a0' } })
        .png()
        .toBuffer();
      const file = join(root, 'cat', 'huge.png');
      await writeFile(file, png.subarray(0, 4096));
      const out = fresh('huge-out');
      const phases: string[] = [];
      const err = await datasetError(() =>
        ingest({ format: 'imagefolder', root }, out, { imageSize: 32, onProgress: (_d, _t, p) => phases.push(p) }),
      );
      expect(err.file).to.equal(file);
      expect(err.message).to.include(file);
      expect(err.reason).to.match(
        /^image is 9500x9500 \(90\.3 megapixels, 3 channels of 8 bits\): decoding it could take 258 MiB, over the 256 MiB/,
      );
      expect(err.reason).to.include('(1024 MiB of decode memory, 4 images at once)').and.include('BACKDOOR_AUDIT_DECODE_MEMORY');
      expect(
        phases.filter((p) => p === 'decode'),
        'nothing was decoded',
      ).to.deep.equal([]);
      expect((await readdir(work)).filter((n) => n.startsWith(out.split('/').pop()!))).to.deep.equal([]);
    });

    it('follows a smaller budget (option or BACKDOOR_AUDIT_DECODE_MEMORY): refuses above its limit, decodes below it', async () => {
      const root = fresh('budget');
      await mkdir(join(root, 'a'), { recursive: true });
      const big = join(root, 'a', 'big.png');
      const solid = (side: number) => sharp({ create: { width: side, height: side, channels: 3, background: '#123456' } });
      await solid(5000).png().toFile(big);
      await solid(4000)
        .png()
        .toFile(join(root, 'a', 'ok.png'));
      // 64 MiB: one image at a time, 22.4 megapixels of RGB. 5000x5000 is over, 4000x4000 under.
      const small = { imageSize: 8, decodeMemory: 64 * 2 ** 20 };
      const err = await datasetError(() => ingest({ format: 'imagefolder', root }, fresh('b-out'), small));
      expect(err.file).to.equal(big);
      expect(err.reason).to.match(
        /^image is 5000x5000 .* over the 64 MiB \(22\.4 megapixels\) each image may use \(64 MiB of decode memory, 1 images at once\)/,
      );
      // A TIFF called .png: its header is read by sharp's metadata(), against the same limit.
      const tiffRoot = fresh('budget-tiff');
      await mkdir(join(tiffRoot, 'a'), { recursive: true });
      await solid(5000)
        .tiff({ compression: 'deflate' })
        .toFile(join(tiffRoot, 'a', 'tiff.png'));
      const tiffErr = await datasetError(() => ingest({ format: 'imagefolder', root: tiffRoot }, fresh('b-out'), small));
      expect(tiffErr.file).to.equal(join(tiffRoot, 'a', 'tiff.png'));
      expect(tiffErr.reason).to.match(/^image is 5000x5000 /);

      const saved = process.env.BACKDOOR_AUDIT_DECODE_MEMORY;
      try {
        process.env.BACKDOOR_AUDIT_DECODE_MEMORY = '64MiB';
        expect((await datasetError(() => ingest({ format: 'imagefolder', root }, fresh('b-out'), { imageSize: 8 }))).file).to.equal(big);
        process.env.BACKDOOR_AUDIT_DECODE_MEMORY = 'lots';
        let envErr: unknown;
        await ingest({ format: 'imagefolder', root }, fresh('b-out'), { imageSize: 8 }).catch((e: unknown) => (envErr = e));
        expect((envErr as Error).message).to.match(/^BACKDOOR_AUDIT_DECODE_MEMORY=lots: expected bytes or a size/);
        process.env.BACKDOOR_AUDIT_DECODE_MEMORY = '64M';
        await rm(big);
        const m = await ingest({ format: 'imagefolder', root }, fresh('b-out'), { imageSize: 8 });
        expect(m.size).to.equal(1);
      } finally {
        if (saved === undefined) delete process.env.BACKDOOR_AUDIT_DECODE_MEMORY;
        else process.env.BACKDOOR_AUDIT_DECODE_MEMORY = saved;
      }
    });
  });

  describe('classes too small for a flow', () => {
    it('warns below max(flow batch size, MIN_FLOW_SAMPLES), saying why', () => {
      const cfg = { epochs: 50, batchSize: 16, lr: 1e-3, hidden: 64 };
      expect(MIN_FLOW_SAMPLES).to.equal(20);
      expect(smallClassWarning('cat', 3, 20, cfg, 8)).to.equal(undefined);
      expect(smallClassWarning('cat', 3, 17, cfg, 8)).to.match(/^class "cat" \(3\) has 17 samples, fewer than 20: /);
      expect(smallClassWarning('cat', 3, 12, cfg, 8)).to.match(/fewer than one batch \(audit\.flow\.batchSize 16\)/);
      expect(smallClassWarning('cat', 3, 200, { ...cfg, batchSize: 256 }, 8)).to.match(/has 200 samples, fewer than one batch/);
    });

    it('warns when a class has fewer samples than its features have dimensions, naming the settings that narrow them', () => {
      const cfg = { epochs: 50, batchSize: 16, lr: 1e-3, hidden: 64 };
      // The demo's case: about 45 samples of 112 pooled dimensions.
      expect(smallClassWarning('frog', 6, 45, cfg, 112)).to.equal(
        'class "frog" (6) has 45 samples, fewer than its 112 feature dimensions: its flow can fit their span ' +
          'rather than a density, so its S_ND and poison scores are unreliable ' +
          '(add samples, or fewer dimensions: audit.features.stages, audit.encoder.width)',
      );
      expect(smallClassWarning('frog', 6, 112, cfg, 112), 'as many samples as dimensions').to.equal(undefined);
      expect(smallClassWarning('frog', 6, 45, cfg, 40)).to.equal(undefined);
      // The batch warning says the more basic problem first.
      expect(smallClassWarning('frog', 6, 10, cfg, 112)).to.match(/fewer than one batch/);
    });

    it('the flow stage logs the warning and records it in its info (what the report can carry)', async () => {
      const store = new ArtifactStore(fresh('store'));
      const engine = new StageEngine(store, STAGE_IMPLS);
      // Class 0: 30 samples; class 1: 5.
      const labels = Int32Array.from({ length: 35 }, (_, i) => (i < 30 ? 0 : 1));
      const images = new InMemoryImages({
        classes: ['big', 'tiny'],
        height: 2,
        width: 2,
        labels,
        ids: Array.from({ length: 35 }, (_, i) => `s${i}.png`),
        pixels: new Uint8Array(35 * 12),
      });
      const dataset = await store.publish('ingest', 'test-dataset', async (tmp) => {
        await writeDataset(images, join(tmp, 'dataset'), 'tiny-set');
      });
      const rng = new Rng(3);
      const features = await store.publish('features', 'test-features', (tmp) =>
        writeMatrix(
          tmp,
          'features',
          matrix(
            35,
            4,
            Float32Array.from({ length: 140 }, () => rng.normal()),
          ),
        ),
      );
      const logs: string[] = [];
      const runtime: StageRuntime = { attempt: 1, heartbeat: () => undefined, log: (l) => logs.push(l) };
      const run = (classIndex: number) =>
        engine.run(
          {
            stage: 'flow',
            label: `flow[${classIndex}]`,
            params: { classIndex, config: { epochs: 1, batchSize: 16, lr: 1e-3, hidden: 4 }, seed: 1, backend: 'cpu' },
            inputs: { features, dataset },
          },
          runtime,
        );
      const tiny = await run(1);
      expect(tiny.info.warnings).to.have.length(1);
      expect(tiny.info.warnings![0]).to.match(/^class "tiny" \(1\) has 5 samples, fewer than one batch/);
      expect(logs.some((l) => l.startsWith('flow[1]: warning: class "tiny" (1) has 5 samples'))).to.equal(true);
      expect((await run(1)).info.warnings, 'a cache hit carries it too').to.deep.equal(tiny.info.warnings);
      expect((await run(0)).info.warnings).to.equal(undefined);
    });
  });
});
