// The density matrices of a finished `npm run bench -- nightly` run, written in the format
// `npm run bench -- nd-normalization --from DIR` reads: one file per policy and night, with the
// labels and the poisoned samples of that night (from the bench's own truth files, by sample
// id). So a new detection statistic can be scored on the nightly weeks without training an
// encoder or a flow again. Each policy's store holds one density matrix per night; it is
// matched to its night's dataset by the number of samples (every night has a different size).
//
//   npm run bench -- nightly-density --out DIR [--store .cache/bench-nightly] [--set c300-a15-p4-s0]
import { access, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { readMatrix } from '../activities/io.js';
import { openDataset } from '../data/dataset.js';

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    store: { type: 'string', default: join('.cache', 'bench-nightly') },
    set: { type: 'string', default: 'c300-a15-p4-s0' },
    out: { type: 'string' },
  },
});
if (!values.out) throw new Error('nightly-density: --out DIR is required');
const exists = (p: string) =>
  access(p).then(
    () => true,
    () => false,
  );

// Night truth files: the night's size and its poisoned ids.
const truthDir = join(values.store, 'datasets', values.set);
const nights = new Map<number, { night: number; poisoned: Set<string> }>();
for (const f of (await readdir(truthDir)).filter((n) => n.endsWith('.truth.json'))) {
  const t = JSON.parse(await readFile(join(truthDir, f), 'utf8')) as { night: number; samples: number; poisoned: { id: string }[] };
  nights.set(t.samples, { night: t.night, poisoned: new Set(t.poisoned.map((p) => p.id)) });
}
await mkdir(values.out, { recursive: true });
const runs = join(values.store, 'runs', values.set);
let written = 0;
for (const policy of (await readdir(runs)).sort()) {
  const store = join(runs, policy, 'store');
  const datasets = new Map<number, string>();
  const densities: string[] = [];
  for (const entry of await readdir(store)) {
    const dir = join(store, entry);
    if (await exists(join(dir, 'density.json'))) densities.push(dir);
    else if (await exists(join(dir, 'dataset', 'dataset.json'))) {
      const data = await openDataset(join(dir, 'dataset'));
      datasets.set(data.size, dir);
      await data.close();
    }
  }
  for (const dir of densities) {
    const density = await readMatrix(dir, 'density');
    const night = nights.get(density.rows);
    const datasetDir = datasets.get(density.rows);
    if (!night || !datasetDir) throw new Error(`${dir}: ${density.rows} rows match no night of ${truthDir} or no dataset of ${store}`);
    const data = await openDataset(join(datasetDir, 'dataset'));
    const poisoned = night.poisoned.size > 0;
    const body = {
      dataset: `nightly-${policy}`,
      attack: poisoned ? 'badnets' : 'clean',
      condition: poisoned ? 'non-disruptive' : 'clean',
      trial: night.night,
      labels: Array.from(data.labels),
      truth: data.ids.map((id) => (night.poisoned.has(id) ? 1 : 0)),
      rows: density.rows,
      cols: density.cols,
      density: Array.from(density.data),
    };
    await data.close();
    await writeFile(join(values.out, `${policy}-night${night.night}.json`), JSON.stringify(body));
    written++;
  }
}
console.log(`nightly-density: ${written} density matrices written to ${values.out}`);
