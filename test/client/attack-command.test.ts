// `backdoor-audit attack <name>`: a poisoned ImageFolder copy with its ground truth, from real images.
import { expect } from 'chai';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import type { ExportedTruth } from '../../client/attack-command.js';
import { main } from '../../client/cli.js';
import { tinyImageFolder } from '../temporal-helpers.js';

describe('attack command', function () {
  this.timeout(120_000);
  let dir: string;
  let data: string;
  const run = async (...args: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(['attack', ...args], { out: (t) => void out.push(t), err: (t) => void err.push(t) });
    return { code, out, err };
  };
  const rgb = async (file: string) => (await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true })).data;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'attack-command-'));
    data = await tinyImageFolder(join(dir, 'data'), 3, 10);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes every sample as PNG, the poisoned ones in the target class with the patch, and truth naming them', async function () {
    const out = join(dir, 'badnets');
    const r = await run('badnets', '--dataset', data, '--out', out, '--rate', '0.2', '--seed', '3');
    expect(r.code, r.err.join('\n')).to.equal(0);
    expect(r.out[0]).to.equal('6 of 30 poisoned (badnets -> class 0)');
    const truth = JSON.parse(await readFile(join(out, 'truth.json'), 'utf8')) as ExportedTruth;
    expect(truth.files).to.have.length(30);
    expect(truth.poisoned).to.have.length(6);
    expect((await readdir(out)).sort()).to.deep.equal(['airplane', 'automobile', 'bird', 'preview.png', 'truth.json']);
    for (const [k, i] of truth.poisoned.entries()) {
      // Relabelled to the target: its file is in the target's folder, and it came from another class.
      expect(truth.files[i].startsWith('airplane/')).to.equal(true);
      expect(truth.sourceLabels[k]).to.not.equal(0);
      expect(truth.sourceIds[i].startsWith(`${['airplane', 'automobile', 'bird'][truth.sourceLabels[k]]}/`)).to.equal(true);
      const original = await sharp(join(data, truth.sourceIds[i])).resize(32, 32, { fit: 'fill' }).raw().toBuffer();
      const poisoned = await rgb(join(out, truth.files[i]));
      // Only the upper-left 3x3 patch differs from the decoded original.
      for (let y = 0; y < 32; y++)
        for (let x = 0; x < 32; x++) {
          const o = (y * 32 + x) * 3;
          const same = original[o] === poisoned[o] && original[o + 1] === poisoned[o + 1] && original[o + 2] === poisoned[o + 2];
          if (y >= 3 || x >= 3) expect(same, `${truth.files[i]} pixel ${x},${y}`).to.equal(true);
        }
    }
    expect((await stat(join(out, 'preview.png'))).size).to.be.greaterThan(1000);
  });

  it('is byte-identical for the same seed and refuses to overwrite, an output inside the dataset, or a bad option', async function () {
    const again = join(dir, 'again');
    expect((await run('badnets', '--dataset', data, '--out', again, '--rate', '0.2', '--seed', '3')).code).to.equal(0);
    expect(await readFile(join(again, 'truth.json'), 'utf8')).to.equal(await readFile(join(dir, 'badnets', 'truth.json'), 'utf8'));
    const truth = JSON.parse(await readFile(join(again, 'truth.json'), 'utf8')) as ExportedTruth;
    const f = truth.files[truth.poisoned[0]];
    expect(Buffer.compare(await readFile(join(again, f)), await readFile(join(dir, 'badnets', f)))).to.equal(0);

    const taken = await run('badnets', '--dataset', data, '--out', again);
    expect(taken.code).to.not.equal(0);
    expect(taken.err.join('\n')).to.include(again);
    expect(await readFile(join(again, 'truth.json'), 'utf8')).to.equal(await readFile(join(dir, 'badnets', 'truth.json'), 'utf8'));

    const inside = await run('badnets', '--dataset', data, '--out', join(data, 'poisoned'));
    expect(inside.code).to.not.equal(0);
    expect(inside.err.join('\n')).to.match(/inside|dataset/i);

    const bad = await run('blend', '--dataset', data, '--out', join(dir, 'bad'), '--set', 'corner=upper-left');
    expect(bad.code).to.not.equal(0);
    expect(bad.err.join('\n')).to.match(/corner/);
  });
});
