import { expect } from 'chai';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { publishDir } from '../../data/files.js';

describe('publishDir', () => {
  let work: string;
  beforeEach(async () => {
    work = await mkdtemp(join(tmpdir(), 'files-test-'));
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });

  const writeA = (text: string) => async (tmp: string) => {
    await writeFile(join(tmp, 'a.txt'), text);
    return text;
  };

  it('publishes a new folder, creating its parent, and leaves no temporary folder', async () => {
    const target = join(work, 'deep', 'out');
    expect(await publishDir(target, writeA('one'), { replace: false })).to.equal('one');
    expect(await readFile(join(target, 'a.txt'), 'utf8')).to.equal('one');
    expect(await readdir(join(work, 'deep'))).to.deep.equal(['out']);
  });

  it('replace: swaps a non-empty folder for the new one and removes the old one', async () => {
    const target = join(work, 'out');
    await mkdir(target);
    await writeFile(join(target, 'stale.txt'), 'old');
    await publishDir(target, writeA('new'), { replace: true });
    expect(await readdir(target)).to.deep.equal(['a.txt']);
    expect(await readdir(work)).to.deep.equal(['out']);
  });

  it('keepExisting: the folder already there wins and the new one is discarded', async () => {
    const target = join(work, 'out');
    await publishDir(target, writeA('first'), { replace: true });
    const kept = await publishDir(target, writeA('second'), {
      replace: true,
      keepExisting: async (dir, mine) => {
        expect(mine).to.equal('second');
        return readFile(join(dir, 'a.txt'), 'utf8');
      },
    });
    expect(kept).to.equal('first');
    expect(await readFile(join(target, 'a.txt'), 'utf8')).to.equal('first');
    expect(await readdir(work)).to.deep.equal(['out']);
  });

  it('without replace, a taken target is an error and nothing changes', async () => {
    const target = join(work, 'out');
    await publishDir(target, writeA('first'), { replace: false });
    let err: unknown;
    await publishDir(target, writeA('second'), { replace: false }).catch((e: unknown) => (err = e));
    expect((err as NodeJS.ErrnoException).code).to.be.oneOf(['ENOTEMPTY', 'EEXIST']);
    expect(await readFile(join(target, 'a.txt'), 'utf8')).to.equal('first');
    expect(await readdir(work)).to.deep.equal(['out']);
  });

  it('a failing fill or keepExisting leaves nothing behind, in tmpParent too', async () => {
    const target = join(work, 'out');
    const tmpParent = join(work, '.tmp');
    let err: unknown;
    await publishDir(
      target,
      async (tmp) => {
        await writeFile(join(tmp, 'half.bin'), 'partial');
        throw new Error('died');
      },
      { replace: true, tmpParent },
    ).catch((e: unknown) => (err = e));
    expect((err as Error).message).to.equal('died');
    expect(await readdir(work)).to.deep.equal(['.tmp']);
    expect(await readdir(tmpParent)).to.deep.equal([]);

    await mkdir(target);
    await writeFile(join(target, 'precious.txt'), 'keep me');
    err = undefined;
    await publishDir(target, writeA('new'), {
      replace: true,
      keepExisting: async () => {
        throw new Error('not mine to replace');
      },
    }).catch((e: unknown) => (err = e));
    expect((err as Error).message).to.equal('not mine to replace');
    expect(await readdir(target)).to.deep.equal(['precious.txt']);
    expect((await readdir(work)).sort()).to.deep.equal(['.tmp', 'out']);
  });
});
