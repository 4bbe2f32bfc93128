import { expect } from 'chai';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ARTIFACT_MANIFEST, ArtifactStore, cacheKey, type ArtifactRef } from '../../data/artifacts.js';
import { sha256Hex } from '../../data/hash.js';
import { pathExists } from '../../data/files.js';

let work: string;
let n = 0;
function newStore(): ArtifactStore {
  n++;
  return new ArtifactStore(join(work, `store-${n}`));
}

/** Writes a small two-file artifact (one in a sub-folder). */
function writeModel(weights: string) {
  return async (dir: string): Promise<void> => {
    await writeFile(join(dir, 'weights.bin'), weights);
    await mkdir(join(dir, 'meta'));
    await writeFile(join(dir, 'meta', 'info.json'), '{"epochs":3}');
  };
}

describe('artifacts', () => {
  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'artifacts-test-'));
  });
  after(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  describe('cacheKey', () => {
    it('is stable under parameter key order and sensitive to everything else', () => {
      const k = cacheKey('flows', 2, { lr: 1e-3, hidden: [64, 64], opt: { b1: 0.9, b2: 0.999 } }, ['a', 'b']);
      expect(k).to.match(/^[0-9a-f]{64}$/);
      expect(cacheKey('flows', 2, { opt: { b2: 0.999, b1: 0.9 }, hidden: [64, 64], lr: 0.001 }, ['a', 'b'])).to.equal(k);
      const others = [
        cacheKey('flow', 2, { lr: 1e-3, hidden: [64, 64], opt: { b1: 0.9, b2: 0.999 } }, ['a', 'b']),
        cacheKey('flows', 3, { lr: 1e-3, hidden: [64, 64], opt: { b1: 0.9, b2: 0.999 } }, ['a', 'b']),
        cacheKey('flows', '2', { lr: 1e-3, hidden: [64, 64], opt: { b1: 0.9, b2: 0.999 } }, ['a', 'b']),
        cacheKey('flows', 2, { lr: 1e-3, hidden: [64, 32], opt: { b1: 0.9, b2: 0.999 } }, ['a', 'b']),
        cacheKey('flows', 2, { lr: 1e-3, hidden: [64, 64], opt: { b1: 0.9, b2: 0.999 } }, ['b', 'a']),
        cacheKey('flows', 2, { lr: 1e-3, hidden: [64, 64], opt: { b1: 0.9, b2: 0.999 } }, ['a']),
      ];
      expect(new Set([k, ...others]).size).to.equal(others.length + 1);
    });

    it('rejects parameters without a faithful JSON form', () => {
      expect(() => cacheKey('s', 1, { seed: undefined }, [])).to.throw(/undefined at \$\.params\.seed/);
      expect(() => cacheKey('s', 1, { lr: NaN }, [])).to.throw(/NaN/);
    });
  });

  describe('ArtifactStore', () => {
    it('publishes and looks up, with the manifest hash and byte count in the ref', async () => {
      const store = newStore();
      const key = cacheKey('encoder', 1, { epochs: 3 }, []);
      expect(await store.lookup('encoder', key)).to.equal(undefined);
      const ref = await store.publish('encoder', key, writeModel('0123456789'));
      expect(ref).to.include({ stage: 'encoder', key, bytes: 10 + 12 });
      const dir = store.dir(ref);
      expect(dir).to.equal(store.dir(key));
      expect(ref.sha256).to.equal(sha256Hex(await readFile(join(dir, ARTIFACT_MANIFEST))));
      expect(await readFile(join(dir, 'meta', 'info.json'), 'utf8')).to.equal('{"epochs":3}');
      expect(await store.lookup('encoder', key)).to.deep.equal(ref);
      expect(await store.verify(ref)).to.equal(true);
      expect(await store.files(ref)).to.deep.equal([
        { path: 'meta/info.json', sha256: sha256Hex('{"epochs":3}'), bytes: 12 },
        { path: 'weights.bin', sha256: sha256Hex('0123456789'), bytes: 10 },
      ]);
      // A ref whose manifest hash is not the stored one does not verify.
      expect(await store.verify({ ...ref, sha256: sha256Hex('other') })).to.equal(false);
      expect(() => store.dir('../escape')).to.throw(/invalid artifact key/);
      let err: unknown;
      await store.lookup('flows', key).catch((e: unknown) => (err = e));
      expect((err as Error).message).to.match(/belongs to stage 'encoder'/);
    });

    it('a flipped byte makes lookup miss and quarantines the artifact', async () => {
      const store = newStore();
      const key = cacheKey('features', 1, {}, ['x']);
      const ref = await store.publish('features', key, writeModel('abcdefgh'));
      const file = join(store.dir(ref), 'weights.bin');
      const bytes = await readFile(file);
      bytes[3] = bytes[3]! ^ 0x01;
      await writeFile(file, bytes);
      expect(await store.verify(ref)).to.equal(false);
      expect(await store.lookup('features', key)).to.equal(undefined);
      expect(await pathExists(store.dir(key))).to.equal(false);
      const quarantined = await readdir(join(store.root, '.quarantine'));
      expect(quarantined).to.have.length(1);
      expect(quarantined[0]!.startsWith(key)).to.equal(true);
      // The stage can then run again and publish under the same key.
      const again = await store.publish('features', key, writeModel('abcdefgh'));
      expect(again.sha256).to.equal(ref.sha256); // same content, same manifest
      expect(await store.lookup('features', key)).to.deep.equal(again);
    });

    it('an extra, missing or truncated file, or a folder without manifest, is not reused', async () => {
      const store = newStore();
      const cases: [string, (dir: string) => Promise<void>][] = [
        ['extra', (dir) => writeFile(join(dir, 'stray.txt'), 'x')],
        ['missing', (dir) => rm(join(dir, 'meta', 'info.json'))],
        ['truncated', (dir) => writeFile(join(dir, 'weights.bin'), '0123')],
        ['no-manifest', (dir) => rm(join(dir, ARTIFACT_MANIFEST))],
      ];
      for (const [name, damage] of cases) {
        const key = cacheKey('retrain', 1, { name }, []);
        await store.publish('retrain', key, writeModel('01234567'));
        await damage(store.dir(key));
        expect(await store.lookup('retrain', key), name).to.equal(undefined);
        expect(await pathExists(store.dir(key)), name).to.equal(false);
      }
    });

    it('a crash inside write leaves nothing visible', async () => {
      const store = newStore();
      const key = cacheKey('simclr', 1, {}, []);
      let err: unknown;
      await store
        .publish('simclr', key, async (dir) => {
          await writeFile(join(dir, 'half.bin'), 'partial');
          throw new Error('worker died');
        })
        .catch((e: unknown) => (err = e));
      expect((err as Error).message).to.equal('worker died');
      expect(await pathExists(store.dir(key))).to.equal(false);
      expect(await readdir(join(store.root, '.tmp'))).to.deep.equal([]);
      expect(await store.lookup('simclr', key)).to.equal(undefined);
    });

    it('concurrent publishes of one key agree on a single artifact', async () => {
      const store = newStore();
      const key = cacheKey('density', 1, {}, []);
      const refs: ArtifactRef[] = await Promise.all(
        ['first', 'second', 'third'].map((w) => store.publish('density', key, async (dir) => writeFile(join(dir, 'm.bin'), w))),
      );
      expect(refs[1]).to.deep.equal(refs[0]);
      expect(refs[2]).to.deep.equal(refs[0]);
      expect(await store.lookup('density', key)).to.deep.equal(refs[0]);
      expect(await readdir(join(store.root, '.tmp'))).to.deep.equal([]);
      expect(await readdir(store.dir(key))).to.have.members(['m.bin', ARTIFACT_MANIFEST]);
    });

    it('refuses to publish the reserved manifest name or a symlink', async () => {
      const store = newStore();
      const key = cacheKey('x', 1, {}, []);
      let err: unknown;
      await store.publish('x', key, (dir) => writeFile(join(dir, ARTIFACT_MANIFEST), '{}')).catch((e: unknown) => (err = e));
      expect((err as Error).message).to.match(/reserved/);
      err = undefined;
      const { symlink } = await import('node:fs/promises');
      await store.publish('x', key, (dir) => symlink('/etc/hostname', join(dir, 'link'))).catch((e: unknown) => (err = e));
      expect((err as Error).message).to.match(/only regular files/);
      expect(await pathExists(store.dir(key))).to.equal(false);
    });

    it('sweep removes stale temporary folders of crashed publishers', async () => {
      const store = newStore();
      await mkdir(join(store.root, '.tmp', 'abc-123'), { recursive: true });
      expect(await store.sweep(60_000)).to.equal(0);
      expect(await store.sweep(-1)).to.equal(1);
      expect(await readdir(join(store.root, '.tmp'))).to.deep.equal([]);
    });
  });
});
