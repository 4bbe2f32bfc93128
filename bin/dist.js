// Whether dist/ (the compiled JavaScript `npm run build` writes) is the current sources, and
// which entry the launcher runs. Plain JavaScript: it decides, before anything is compiled,
// whether anything has to be. Each build is a folder of its own, dist/<build>/, never changed
// once written (a running process that imports a module late still gets its own build's), and
// dist/build-stamp.json names the current one with a hash of every file the build read (the
// sources tsconfig.build.json includes, the build's configuration and script, and the versions
// of the packages it bakes in). The build is fresh only while all of them hash the same.
// Contents, not mtimes: a checkout, a copy or a touch that leaves a file as it was keeps the
// build usable, and an edit within the same second does not.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout this launcher belongs to. */
export const repoRoot = fileURLToPath(new URL('..', import.meta.url)).replace(/[\\/]$/, '');

export const STAMP_FILE = 'build-stamp.json';

/**
 * Files outside the source folders whose change changes what the build writes: its
 * configuration and script, and the versions of what it bakes in (the workflow SDK in the
 * bundle; the pipeline validator's ajv code and TypeBox schema).
 */
const BUILD_INPUTS = [
  'tsconfig.json',
  'tsconfig.build.json',
  'scripts/build.ts',
  'node_modules/@temporalio/workflow/package.json',
  'node_modules/ajv/package.json',
  'node_modules/typebox/package.json',
];

/** Every .ts file under `dir` but tests, as paths relative to `root` with forward slashes. */
function tsFiles(root, dir, out) {
  let entries;
  try {
    entries = readdirSync(join(root, dir), { withFileTypes: true });
  } catch {
    return out; // a folder named in tsconfig.build.json that this checkout lacks
  }
  for (const e of entries) {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) tsFiles(root, rel, out);
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts')) out.push(rel);
  }
  return out;
}

/** The files a build of `root` reads, sorted: the folders tsconfig.build.json includes, and BUILD_INPUTS. */
export function buildInputs(root = repoRoot) {
  const config = JSON.parse(readFileSync(join(root, 'tsconfig.build.json'), 'utf8'));
  const files = [];
  for (const dir of config.include ?? []) tsFiles(root, dir, files);
  for (const f of BUILD_INPUTS) if (existsSync(join(root, f))) files.push(f);
  return files.sort();
}

/** { relative path: sha256 of its contents (16 hex) } for every build input of `root`. */
export function inputHashes(root = repoRoot) {
  const hashes = {};
  for (const f of buildInputs(root)) {
    hashes[f] = createHash('sha256')
      .update(readFileSync(join(root, ...f.split('/'))))
      .digest('hex')
      .slice(0, 16);
  }
  return hashes;
}

/**
 * Whether `root`'s dist/ holds a build of the current sources: `{ fresh: true, build: its folder }`, or
 * `{ fresh: false, reason }` naming the first difference (no build, a file changed, added or
 * removed since it).
 */
export function distStatus(root = repoRoot) {
  let stamp;
  try {
    stamp = JSON.parse(readFileSync(join(root, 'dist', STAMP_FILE), 'utf8'));
  } catch {
    return { fresh: false, reason: 'dist/ has no complete build' };
  }
  const build = join(root, 'dist', String(stamp.build));
  if (typeof stamp.build !== 'string' || !existsSync(join(build, 'client', 'cli.js'))) {
    return { fresh: false, reason: `dist/${STAMP_FILE} names no complete build` };
  }
  const built = stamp.files ?? {};
  let now;
  try {
    now = inputHashes(root);
  } catch (err) {
    return { fresh: false, reason: `cannot hash the sources (${err.message})` };
  }
  for (const [f, h] of Object.entries(now)) {
    if (built[f] === undefined) return { fresh: false, reason: `${f} was added since dist/ was built` };
    if (built[f] !== h) return { fresh: false, reason: `${f} changed since dist/ was built` };
  }
  for (const f of Object.keys(built)) if (now[f] === undefined) return { fresh: false, reason: `${f} was removed since dist/ was built` };
  return { fresh: true, build };
}

/**
 * What the launcher runs: the compiled CLI when dist/ is fresh, else the TypeScript sources
 * through tsx, with a line saying why. BACKDOOR_AUDIT_SOURCES=1 always runs the sources.
 */
export function cliEntry(root = repoRoot, env = process.env) {
  if (env.BACKDOOR_AUDIT_SOURCES === '1') return { compiled: false, path: join(root, 'client', 'cli.ts') };
  const status = distStatus(root);
  if (status.fresh) return { compiled: true, path: join(status.build, 'client', 'cli.js') };
  return {
    compiled: false,
    path: join(root, 'client', 'cli.ts'),
    notice: `note: running the TypeScript sources through tsx (slower start): ${status.reason}; \`npm run build\` compiles them`,
  };
}
