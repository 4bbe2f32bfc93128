// `npm run bench -- <name> [options]` runs bench/<name>.ts with the options after the name.
//
//   npm run bench -- speed --quick
//   npm run bench -- detection-scale --per-class 100
import { readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

async function available(): Promise<string[]> {
  const files = await readdir(here);
  return files
    .filter((f) => f.endsWith('.ts') && f !== 'index.ts' && !f.endsWith('.d.ts'))
    .map((f) => f.slice(0, -3))
    .sort();
}

const name = process.argv[2];
const names = await available();
if (name === undefined || name === '--help' || name === '-h') {
  console.log(`usage: npm run bench -- <name> [options]\nbenchmarks: ${names.join(', ')}`);
  process.exit(name === undefined ? 1 : 0);
}
if (!names.includes(name)) {
  console.error(`bench: no benchmark '${name}' (bench/${name}.ts); available: ${names.join(', ')}`);
  process.exit(1);
}
// The benchmark parses process.argv.slice(2) itself: drop the name so it sees only its options.
process.argv.splice(2, 1);
await import(pathToFileURL(join(here, `${name}.ts`)).href);
