// Issue 13, "disk full during a stage": an artifact store on a small tmpfs; an ingest bigger
// than the free space fails with ENOSPC naming the store, publishes nothing (lookup finds
// nothing, no temporary folder is left), keeps its .work folder for the retry, and succeeds
// once space returns. Needs root (mount); skipped, saying why, where mounting is not allowed.
import { expect } from 'chai';
import sharp from 'sharp';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArtifactStore } from '../../data/artifacts.js';
import { pathExists } from '../../data/files.js';
import { StageEngine } from '../../activities/engine.js';
import type { StageRuntime } from '../../activities/stage.js';
import { STAGE_IMPLS } from '../../activities/stages/index.js';
import type { StageRequest } from '../../workflows/types.js';

const MIB = 1024 * 1024;
/** One 128 x 128 RGB sample in a shard: 12 pages. */
const SAMPLE_BYTES = 128 * 128 * 3;

describe('disk full during a stage', function () {
  let work: string | undefined;
  let mnt: string | undefined;
  let mounted = false;

  before(async function () {
    work = await mkdtemp(join(tmpdir(), 'disk-full-'));
    mnt = join(work, 'small');
    await mkdir(mnt);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mnt], { stdio: 'pipe' });
      mounted = true;
    } catch (err) {
      const why = (err as { stderr?: Buffer }).stderr?.toString().trim() || (err as Error).message;
      console.log(`      skipped: cannot mount a tmpfs here (${why}); needs root or CAP_SYS_ADMIN`);
      this.skip();
    }
  });

  after(async () => {
    if (mounted && mnt) execFileSync('umount', [mnt], { stdio: 'pipe' });
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('fails with ENOSPC naming the store, leaves no partial artifact, and succeeds once space returns', async () => {
    // An ImageFolder of 2 x 30 tiny PNGs (outside the tmpfs), ingested at 128 px: 60 x 48 KiB
    // of shards, about 2.9 MiB, written into a store on an 8 MiB tmpfs with 6 MiB taken.
    const src = join(work!, 'images');
    for (const c of ['a', 'b']) {
      await mkdir(join(src, c), { recursive: true });
      for (let i = 0; i < 30; i++) {
        const png = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: i * 8, g: c === 'a' ? 0 : 200, b: 50 } } })
          .png()
          .toBuffer();
        await writeFile(join(src, c, `${String(i).padStart(3, '0')}.png`), png);
      }
    }
    // The free space a whole number of samples (12 pages of 4 KiB each; tmpfs counts pages): the
    // 41st sample's write then finds no space at all and fails with ENOSPC. (With a remainder,
    // write(2) writes part of a sample first; see SHORT_WRITE below.)
    const filler = join(mnt!, 'filler');
    await writeFile(filler, Buffer.alloc(8 * MIB - 40 * SAMPLE_BYTES, 1));
    const store = new ArtifactStore(join(mnt!, 'store'));
    const engine = new StageEngine(store, STAGE_IMPLS);
    const logs: string[] = [];
    const runtime: StageRuntime = { attempt: 1, heartbeat: () => undefined, log: (l) => logs.push(l) };
    const req: StageRequest = {
      stage: 'ingest',
      label: 'ingest',
      params: { source: { format: 'imagefolder', root: src }, imageSize: 128, name: 'big' },
      inputs: {},
    };
    const key = await engine.keyOf(req);

    let err: unknown;
    try {
      await engine.run(req, runtime);
    } catch (e) {
      err = e;
    }
    expect(err, 'the stage must fail').to.be.instanceOf(Error);
    const message = (err as Error).message;
    expect((err as NodeJS.ErrnoException).code).to.equal('ENOSPC');
    expect(message).to.include('no space left on device (ENOSPC) in the artifact store ' + store.root);

    // Nothing published, nothing half-written left behind.
    expect(await store.lookup('ingest', key)).to.equal(undefined);
    expect(await pathExists(store.dir(key))).to.equal(false);
    expect(await readdir(join(store.root, '.tmp')).catch(() => [])).to.deep.equal([]);
    expect(await readdir(join(store.root, '.quarantine')).catch(() => [])).to.deep.equal([]);
    // The engine keeps a failed stage's work folder (checkpoints for the retry), removes it on success.
    expect(await pathExists(join(store.root, '.work', key))).to.equal(true);

    // Space returns: the retry computes and publishes the whole artifact.
    await rm(filler);
    const out = await engine.run(req, { ...runtime, attempt: 2 });
    expect(out.cached).to.equal(false);
    expect(out.ref.bytes).to.be.above(2.5 * MIB);
    expect(await store.lookup('ingest', key)).to.deep.equal(out.ref);
    expect(await readdir(join(store.root, '.tmp'))).to.deep.equal([]);
    expect(await pathExists(join(store.root, '.work', key))).to.equal(false);
    expect((await engine.run(req, runtime)).cached).to.equal(true);
  });

  it('a sample that fits only in part (a short write) fails with ENOSPC and the store, leaving nothing behind', async () => {
    // write(2) fills the last pages and returns a short count; data/ingest.ts then writes the
    // rest, which fails with the real reason, ENOSPC, which the engine names with the store.
    const src = join(work!, 'images');
    await rm(join(mnt!, 'store'), { recursive: true, force: true }); // the first test's artifact
    const filler = join(mnt!, 'filler2');
    await writeFile(filler, Buffer.alloc(8 * MIB - 40 * SAMPLE_BYTES - 6 * 4096, 1));
    const store = new ArtifactStore(join(mnt!, 'store2'));
    const engine = new StageEngine(store, STAGE_IMPLS);
    const runtime: StageRuntime = { attempt: 1, heartbeat: () => undefined, log: () => undefined };
    const req: StageRequest = {
      stage: 'ingest',
      label: 'ingest',
      params: { source: { format: 'imagefolder', root: src }, imageSize: 128, name: 'big' },
      inputs: {},
    };
    const key = await engine.keyOf(req);
    let err: unknown;
    try {
      await engine.run(req, runtime);
    } catch (e) {
      err = e;
    }
    expect(err, 'the stage must fail').to.be.instanceOf(Error);
    const message = (err as Error).message;
    expect((err as NodeJS.ErrnoException).code).to.equal('ENOSPC');
    expect(message).to.include(store.root);
    expect(await store.lookup('ingest', key)).to.equal(undefined);
    expect(await readdir(join(store.root, '.tmp')).catch(() => [])).to.deep.equal([]);
    await rm(filler);
    expect((await engine.run(req, { ...runtime, attempt: 2 })).cached).to.equal(false);
  });
});
