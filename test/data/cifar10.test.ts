// `format: cifar10` without the shared data: the bundled subset (and its limits), the bundled
// triggers, and the official binary archive (BACKDOOR_AUDIT_CIFAR10_BINARY), built here.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { bundledTriggersDir, loadTrigger, triggerPath } from '../../attacks/triggers.js';
import { BUNDLED_PER_CLASS, CIFAR10_ARCHIVE, CIFAR10_CLASSES, bundledCifar10Dir, cifar10Origin } from '../../data/cifar10.js';
import { datasetFingerprint } from '../../data/fingerprint.js';
import { openDataset } from '../../data/dataset.js';
import { DatasetError } from '../../data/dataset-error.js';
import { ingest } from '../../data/ingest.js';
import { bundledDataDir, sharedDataDir } from '../../data/paths.js';
import { resolveSource, sourceRoots } from '../../data/sources.js';

const VARS = ['BACKDOOR_AUDIT_SHARED_DATA', 'BACKDOOR_AUDIT_CIFAR10_BINARY'] as const;

describe('format: cifar10 without the shared data', function () {
  this.timeout(120_000);
  let work: string;
  let empty: string;
  const saved: Record<string, string | undefined> = {};

  before(async () => {
    for (const v of VARS) saved[v] = process.env[v];
    work = await mkdtemp(join(tmpdir(), 'cifar10-test-'));
    empty = join(work, 'empty-shared');
    await mkdir(empty);
  });
  beforeEach(() => {
    process.env.BACKDOOR_AUDIT_SHARED_DATA = empty;
    delete process.env.BACKDOOR_AUDIT_CIFAR10_BINARY;
  });
  afterEach(() => {
    for (const v of VARS) {
      if (saved[v] === undefined) delete process.env[v];
      else process.env[v] = saved[v];
    }
  });
  after(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  describe('bundled subset', () => {
    it("ingests the demo's limits from data/bundled/cifar10 and says so", async () => {
      expect(cifar10Origin().kind).to.equal('bundled');
      for (const [split, limit] of [
        ['train', 50],
        ['test', 20],
      ] as const) {
        const got = await resolveSource({ format: 'cifar10', split }, { limitPerClass: limit });
        expect(got.spec).to.deep.equal({ format: 'imagefolder', root: join(bundledCifar10Dir(), split) });
        expect(got.description).to.include('bundled subset data/bundled/cifar10').and.include(join(empty, CIFAR10_ARCHIVE));
        expect(sourceRoots({ format: 'cifar10', split })).to.deep.equal([{ dir: join(bundledCifar10Dir(), split), key: ['split'] }]);
        const m = await ingest(got.spec, join(work, `bundled-${split}`), { imageSize: 32, limitPerClass: limit });
        expect(m.size).to.equal(limit * 10);
        expect(m.classes).to.deep.equal([...CIFAR10_CLASSES]);
      }
    });

    it('refuses a larger limit, or none, naming what to set', async () => {
      for (const [split, limit] of [
        ['train', BUNDLED_PER_CLASS.train + 1],
        ['test', BUNDLED_PER_CLASS.test + 1],
        ['train', undefined],
      ] as const) {
        let err: unknown;
        await resolveSource({ format: 'cifar10', split }, limit === undefined ? {} : { limitPerClass: limit }).catch(
          (e: unknown) => (err = e),
        );
        expect(err, `${split} ${limit}`).to.be.instanceOf(DatasetError);
        expect((err as Error).message)
          .to.include(join(empty, CIFAR10_ARCHIVE))
          .and.include(`holds only ${BUNDLED_PER_CLASS[split]} ${split} images per class`)
          .and.include(limit === undefined ? 'no limitPerClass' : `limitPerClass ${limit}`)
          .and.include('set BACKDOOR_AUDIT_SHARED_DATA')
          .and.include('BACKDOOR_AUDIT_CIFAR10_BINARY');
      }
    });

    it('has a fingerprint of its own, never the shared copy’s', async () => {
      const bundled = await datasetFingerprint({ format: 'cifar10', split: 'train' });
      expect(await datasetFingerprint({ format: 'cifar10', split: 'train' })).to.equal(bundled);
      expect(await datasetFingerprint({ format: 'cifar10', split: 'test' })).to.not.equal(bundled);
      delete process.env.BACKDOOR_AUDIT_SHARED_DATA;
      if (existsSync(join(sharedDataDir(), CIFAR10_ARCHIVE))) {
        expect(cifar10Origin().kind).to.equal('shared');
        expect(await datasetFingerprint({ format: 'cifar10', split: 'train' })).to.not.equal(bundled);
      }
    });

    it('holds byte-for-byte copies of the shared archive’s first images (when it is here)', async function () {
      if (saved.BACKDOOR_AUDIT_SHARED_DATA === undefined) delete process.env.BACKDOOR_AUDIT_SHARED_DATA;
      else process.env.BACKDOOR_AUDIT_SHARED_DATA = saved.BACKDOOR_AUDIT_SHARED_DATA;
      const archive = join(sharedDataDir(), CIFAR10_ARCHIVE);
      if (!existsSync(archive)) this.skip();
      const member = 'cifar10-jpg/train/cat/0049.jpg';
      const { stdout } = await promisify(execFile)('tar', ['-xzOf', archive, member], { encoding: 'buffer', maxBuffer: 1 << 20 });
      expect(Buffer.compare(stdout, await readFile(join(bundledCifar10Dir(), 'train', 'cat', '0049.jpg')))).to.equal(0);
    });
  });

  describe('bundled triggers', () => {
    it('loads the BadNets and Blend defaults from data/bundled/triggers', async () => {
      expect(triggerPath('badnet_patch_32.png')).to.equal(join(bundledDataDir, 'triggers', 'badnet_patch_32.png'));
      const t = await loadTrigger('badnet_patch_32.png');
      expect([t.height, t.width]).to.deep.equal([32, 32]);
      expect(t.mask.reduce((a, b) => a + b, 0)).to.equal(9); // the 3x3 patch of its mask
      const kitty = await loadTrigger('hellokitty_32.png', 32);
      expect(kitty.pattern.length).to.equal(32 * 32 * 3);
    });

    it('prefers the shared copy, and names the shared path for one not bundled', async () => {
      delete process.env.BACKDOOR_AUDIT_SHARED_DATA;
      const shared = join(sharedDataDir(), 'triggers', 'badnet_patch_32.png');
      if (existsSync(shared)) {
        expect(triggerPath('badnet_patch_32.png')).to.equal(shared);
        expect(await readFile(shared)).to.deep.equal(await readFile(join(bundledTriggersDir, 'badnet_patch_32.png')));
      }
      process.env.BACKDOOR_AUDIT_SHARED_DATA = empty;
      expect(() => triggerPath('apple_white.png')).to.throw(join(empty, 'triggers', 'apple_white.png'));
    });
  });

  describe('official binary archive (BACKDOOR_AUDIT_CIFAR10_BINARY)', () => {
    const rec = (label: number, seed: number): Buffer => {
      const r = Buffer.alloc(3073);
      r[0] = label;
      for (let i = 1; i < 3073; i++) r[i] = (i * seed + label) & 255;
      return r;
    };

    async function buildArchive(name: string, files: Record<string, Buffer>): Promise<string> {
      const src = join(work, `${name}-src`);
      await mkdir(join(src, 'cifar-10-batches-bin'), { recursive: true });
      for (const [f, data] of Object.entries(files)) await writeFile(join(src, 'cifar-10-batches-bin', f), data);
      const archive = join(work, `${name}.tar.gz`);
      await promisify(execFile)('tar', ['-czf', archive, '-C', src, 'cifar-10-batches-bin']);
      return archive;
    }

    it('extracts the batches into the cache and ingests them as cifar-binary', async () => {
      const train1 = [rec(0, 3), rec(1, 5), rec(9, 7)];
      const train2 = [rec(2, 11)];
      const test = [rec(3, 13), rec(4, 17)];
      const archive = await buildArchive('cifar-10-binary', {
        'data_batch_1.bin': Buffer.concat(train1),
        'data_batch_2.bin': Buffer.concat(train2),
        'test_batch.bin': Buffer.concat(test),
        'batches.meta.txt': Buffer.from(CIFAR10_CLASSES.join('\n')),
      });
      process.env.BACKDOOR_AUDIT_CIFAR10_BINARY = archive;
      const cacheDir = join(work, 'cache');
      const train = await resolveSource({ format: 'cifar10', split: 'train' }, { cacheDir, limitPerClass: 5000 });
      expect(train.origin?.kind).to.equal('binary');
      expect(train.description).to.include(`binary archive ${archive}`);
      expect(train.spec.format).to.equal('cifar-binary');
      const files = (train.spec as { files: string[] }).files;
      expect(files.map((f) => f.slice(f.lastIndexOf('/') + 1))).to.deep.equal(['data_batch_1.bin', 'data_batch_2.bin']);
      expect(files[0]!.startsWith(join(cacheDir, 'cifar-10-binary-'))).to.equal(true);

      const m = await ingest(train.spec, join(work, 'bin-train'), { imageSize: 32 });
      expect(m.size).to.equal(4);
      const ds = await openDataset(join(work, 'bin-train'));
      expect(Array.from(ds.labels)).to.deep.equal([0, 1, 9, 2]);
      const px = await ds.readImages([3]);
      for (const p of [0, 33, 1023]) for (let ch = 0; ch < 3; ch++) expect(px[p * 3 + ch]).to.equal(train2[0]![1 + ch * 1024 + p]);
      await ds.close();

      const testSet = await resolveSource({ format: 'cifar10', split: 'test' }, { cacheDir });
      expect((await ingest(testSet.spec, join(work, 'bin-test'), { imageSize: 32 })).size).to.equal(2);
      // Extracted once: the second resolve found the cache.
      expect((testSet.spec as { files: string[] }).files[0]!.startsWith(join(files[0]!, '..'))).to.equal(true);

      // Its fingerprint is neither the bundled subset's nor another archive's.
      const binPrint = await datasetFingerprint({ format: 'cifar10', split: 'train' });
      delete process.env.BACKDOOR_AUDIT_CIFAR10_BINARY;
      expect(await datasetFingerprint({ format: 'cifar10', split: 'train' })).to.not.equal(binPrint);
    });

    it('refuses an archive without the batches, and a missing one', async () => {
      const archive = await buildArchive('not-cifar', { 'readme.txt': Buffer.from('hi') });
      process.env.BACKDOOR_AUDIT_CIFAR10_BINARY = archive;
      let err: unknown;
      await resolveSource({ format: 'cifar10', split: 'train' }, { cacheDir: join(work, 'cache2') }).catch((e: unknown) => (err = e));
      expect(err).to.be.instanceOf(DatasetError);
      expect((err as Error).message)
        .to.include(archive)
        .and.include('not a CIFAR-10 binary archive');

      process.env.BACKDOOR_AUDIT_CIFAR10_BINARY = join(work, 'missing.tar.gz');
      err = undefined;
      await datasetFingerprint({ format: 'cifar10', split: 'train' }).catch((e: unknown) => (err = e));
      expect((err as Error).message)
        .to.include(join(work, 'missing.tar.gz'))
        .and.include('BACKDOOR_AUDIT_CIFAR10_BINARY');
    });
  });
});
