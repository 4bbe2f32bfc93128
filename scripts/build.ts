// `npm run build` (also run by `npm run setup`): compiles the sources to JavaScript into a new
// folder dist/<build>/ (tsc -p tsconfig.build.json), bundles the workflows into
// dist/<build>/workflow-bundle.js (webpack, once here instead of at every worker start) and
// writes the pipeline validator as standalone code (client/pipeline-validator.ts), then
// names it in dist/build-stamp.json with the hash of every input (bin/dist.js), which the
// launcher compares with the sources at every start. Type errors fail the build and leave the
// previous one in place (unless --allow-type-errors). The build before the new one is kept (a
// process started from it may still import its modules late); older ones are removed.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, readFile, rename, rm, writeFile, mkdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { inputHashes, repoRoot, STAMP_FILE } from '../bin/dist.js';
import { writeWorkflowBundle } from '../worker/bundle.js';
import { STANDALONE_VALIDATOR_FILE, standaloneValidatorSource } from '../client/pipeline-validator.js';

const dist = join(repoRoot, 'dist');
const t0 = performance.now();
const files = inputHashes();
// The hash of the inputs names the folder; the time keeps two builds of the same sources apart.
const id = `${createHash('sha256').update(JSON.stringify(files)).digest('hex').slice(0, 12)}-${Date.now().toString(36)}`;
const out = join(dist, id);
await mkdir(dist, { recursive: true });

const tsc = join(dirname(createRequire(import.meta.url).resolve('typescript/package.json')), 'bin', 'tsc');
try {
  execFileSync(process.execPath, [tsc, '-p', join(repoRoot, 'tsconfig.build.json'), '--outDir', out], { cwd: repoRoot, stdio: 'inherit' });
} catch {
  // tsc writes the JavaScript even when types are wrong; --allow-type-errors keeps it (a tree
  // in the middle of an edit elsewhere).
  if (!process.argv.includes('--allow-type-errors')) {
    await rm(out, { recursive: true, force: true });
    console.error('build: tsc failed (above); dist/ is unchanged (--allow-type-errors builds anyway)');
    process.exit(1);
  }
  console.error('build: type errors (above), built anyway (--allow-type-errors)');
}
await writeWorkflowBundle(out);
await writeFile(join(out, 'client', STANDALONE_VALIDATOR_FILE), await standaloneValidatorSource());

const stampFile = join(dist, STAMP_FILE);
const previous = await readFile(stampFile, 'utf8')
  .then((text) => (JSON.parse(text) as { build?: string }).build)
  .catch(() => undefined);
// Stamped with the hashes read before compiling: a source edited during the build makes the
// stamp disagree with it, so the launcher runs the sources until the next build.
await writeFile(`${stampFile}.tmp`, JSON.stringify({ build: id, builtAt: new Date().toISOString(), files }, null, 2) + '\n');
await rename(`${stampFile}.tmp`, stampFile);
for (const entry of await readdir(dist, { withFileTypes: true })) {
  if (entry.isDirectory() && entry.name !== id && entry.name !== previous)
    await rm(join(dist, entry.name), { recursive: true, force: true });
}
const changed = Object.entries(inputHashes()).some(([f, h]) => files[f] !== h);
console.log(
  `build: dist/${id} in ${((performance.now() - t0) / 1000).toFixed(1)} s` +
    (changed ? '; sources changed during the build, so it is already stale: build again' : ''),
);
