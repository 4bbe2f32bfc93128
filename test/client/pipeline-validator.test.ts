// The compiled build validates pipeline files with the standalone code scripts/build.ts writes
// (client/pipeline-validator.ts) instead of compiling the schema at every start: it must accept
// and refuse exactly what the compiled schema does, with the same errors (the messages of
// client/pipeline-errors.ts are made from them).
import { expect } from 'chai';
import { mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ValidateFunction } from 'ajv';
import { parse } from 'yaml';
import { pipelineValidator, standaloneValidatorSource } from '../../client/pipeline-validator.js';
import { repoRoot } from '../../data/paths.js';

describe('standalone pipeline validator', function () {
  this.timeout(60_000);
  let dir: string;
  let standalone: ValidateFunction;
  let compiled: ValidateFunction;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pipeline-validator-'));
    // Where a build puts it, the file resolves ajv's runtime helpers from the checkout's modules.
    await symlink(join(repoRoot, 'node_modules'), join(dir, 'node_modules'), 'dir');
    const file = join(dir, 'validator.mjs');
    await writeFile(file, await standaloneValidatorSource());
    standalone = ((await import(pathToFileURL(file).href)) as { default: ValidateFunction }).default;
    compiled = await pipelineValidator(); // the sources run here: compiled from the schema
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const errorsOf = (v: ValidateFunction, doc: unknown) => (v(doc) ? [] : structuredClone(v.errors));

  it('agrees with the compiled schema on valid and invalid pipelines, error for error', async () => {
    const demo = parse(await readFile(join(repoRoot, 'pipelines', 'demo.yaml'), 'utf8')) as Record<string, unknown>;
    const docs: unknown[] = [
      demo,
      {},
      { ...demo, name: 'x'.repeat(200) }, // maxLength: ajv's runtime ucs2length helper
      { ...demo, name: 'bad name!', unknownKey: 1 },
      { ...demo, dataset: 'cifar10' },
      { ...demo, attack: { name: 'no-such-attack', targetClass: 'zero' } },
      { ...demo, audit: { encoder: { kind: 'simclr', width: '8', epochs: -1 }, flow: { epochs: 1.5 } } },
      { ...demo, temporal: { checkpointEvery: 'often', taskQueues: [] } },
    ];
    for (const [i, doc] of docs.entries()) {
      const expected = errorsOf(compiled, doc);
      expect(errorsOf(standalone, doc), `document ${i}`).to.deep.equal(expected);
      if (i === 0) expect(expected, 'the demo pipeline is valid').to.deep.equal([]);
      else expect(expected, `document ${i} is refused`).to.not.deep.equal([]);
    }
  });
});
