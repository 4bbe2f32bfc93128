// Scale: ingest + features on a generated 224x224 ImageFolder of 30 classes x 1,300 images (the
// paper's ImageNet-subset size), each fraction in a fresh child process so that its peak RSS
// (process.resourceUsage().maxRSS) is its own: RSS(100%) / RSS(10%) close to 1.0 means memory
// does not grow with the dataset. Then resumption at that size: the same pipeline again on the
// same store (ingest and features must be cache hits), and a run SIGKILLed during its features
// stage whose rerun takes ingest (and the encoder) from the cache and recomputes only features.
//
// The encoder is a tiny tfjs model written with ml/model-io as a `pretrained` encoder (average
// pooling 4x4, one 3x3 conv, global pooling, dense 32): real inference at 224x224 through the
// features stage, without training. The DAG runs through auditDataset and the child exits once
// `features` has ended (flows and later stages never start).
//
//   npm run bench -- scale [--per-class 1300] [--classes 30] [--small 0.1] [--data DIR] [--no-kill]
//
// --data DIR reuses (or generates once into, and keeps) the ImageFolder; otherwise it is
// generated into a temporary folder and removed at the end. Writes bench/results/scale-<date>.json.
import { spawn } from 'node:child_process';
import { writeSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pMap from 'p-map';
import sharp from 'sharp';
import { stringify } from 'yaml';
import { repoRoot } from '../data/paths.js';

const SIDE = 224;
const self = fileURLToPath(import.meta.url);

interface ChildJob {
  store: string;
  root: string;
  perClass: number;
  model: string;
  work: string;
  /** Names the run in the log and the result. */
  tag: string;
}

interface ChildResult {
  tag: string;
  perClass: number;
  images: number;
  seconds: number;
  stages: Record<string, { seconds: number; cached: boolean; figure: string }>;
  maxRssKb: number;
  backend: string;
}

// ---------------------------------------------------------------- child: one pipeline run
if (process.argv[2] === '--child') {
  const job = JSON.parse(process.argv[3]) as ChildJob;
  const { auditDataset } = await import('../activities/in-process.js');
  const { parsePipeline } = await import('../client/pipeline.js');
  const name = `scale-${job.perClass}`;
  const pipeline = await parsePipeline(
    stringify({
      name,
      dataset: { format: 'imagefolder', root: job.root, imageSize: SIDE, limitPerClass: job.perClass, name },
      audit: { encoder: { kind: 'pretrained', path: job.model }, flow: { epochs: 1 }, retrain: false },
      output: join(job.work, 'out', name),
    }),
    join(job.work, `${name}.yaml`),
  );
  const t0 = performance.now();
  const starts: Record<string, number> = {};
  const stages: ChildResult['stages'] = {};
  let backend = '';
  await auditDataset(pipeline, {
    store: job.store,
    onStage: (id, event, outcome) => {
      const now = performance.now();
      if (event === 'start') {
        starts[id] = now;
        writeSync(1, `STAGE ${id} start\n`);
        return;
      }
      stages[id] = { seconds: (now - starts[id]) / 1000, cached: outcome?.cached ?? false, figure: outcome?.info.figure ?? '' };
      if (outcome?.info.backend) backend = outcome.info.backend;
      writeSync(1, `STAGE ${id} end${outcome?.cached ? ' (cached)' : ''} ${stages[id].seconds.toFixed(1)}s\n`);
      if (id === 'features') {
        // Stop after features: nothing downstream is part of this benchmark.
        const result: ChildResult = {
          tag: job.tag,
          perClass: job.perClass,
          images: Number(/^(\d+) x/.exec(stages.features.figure)?.[1] ?? NaN),
          seconds: (now - t0) / 1000,
          stages,
          maxRssKb: process.resourceUsage().maxRSS,
          backend,
        };
        writeSync(1, `RESULT ${JSON.stringify(result)}\n`);
        process.exit(0); // synchronously: the flows the DAG starts next never run
      }
    },
  });
  throw new Error('scale child: the DAG ended without a features stage');
}

// ---------------------------------------------------------------- parent
const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    'per-class': { type: 'string', default: '1300' },
    classes: { type: 'string', default: '30' },
    small: { type: 'string', default: '0.1' },
    data: { type: 'string' },
    'no-kill': { type: 'boolean', default: false },
    'kill-after': { type: 'string', default: '10' },
  },
});
const perClass = Number(values['per-class']);
const classes = Number(values.classes);
const smallPerClass = Math.max(1, Math.round(perClass * Number(values.small)));

/** xorshift32, seeded: per-image noise that makes every JPEG different. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

/** One class's colour and gradient direction, plus noise and a random bright square per image. */
function image(c: number, i: number): Buffer {
  const r = rng(c * 100_003 + i * 7919 + 1);
  const px = Buffer.alloc(SIDE * SIDE * 3);
  const base = [(c * 53) % 256, (c * 97 + 80) % 256, (c * 151 + 160) % 256];
  const angle = (c / classes) * Math.PI * 2;
  const [dx, dy] = [Math.cos(angle), Math.sin(angle)];
  const sq = { x: Math.floor(r() * (SIDE - 40)), y: Math.floor(r() * (SIDE - 40)), s: 10 + Math.floor(r() * 30) };
  for (let y = 0; y < SIDE; y++) {
    for (let x = 0; x < SIDE; x++) {
      const g = ((x - SIDE / 2) * dx + (y - SIDE / 2) * dy) / SIDE; // -0.7 .. 0.7
      const inSq = x >= sq.x && x < sq.x + sq.s && y >= sq.y && y < sq.y + sq.s;
      for (let k = 0; k < 3; k++) {
        const v = inSq ? 255 - base[k] : base[k] + g * 120 + (r() - 0.5) * 60;
        px[(y * SIDE + x) * 3 + k] = v < 0 ? 0 : v > 255 ? 255 : v;
      }
    }
  }
  return px;
}

async function generate(root: string): Promise<{ seconds: number; generated: number }> {
  const have = await readdir(root).catch(() => [] as string[]);
  if (have.length >= classes) {
    const counts = await Promise.all(have.slice(0, classes).map(async (d) => (await readdir(join(root, d))).length));
    if (Math.min(...counts) >= perClass) return { seconds: 0, generated: 0 };
  }
  const t0 = performance.now();
  const jobs: [number, number][] = [];
  for (let c = 0; c < classes; c++) {
    await mkdir(join(root, `class-${String(c).padStart(2, '0')}`), { recursive: true });
    for (let i = 0; i < perClass; i++) jobs.push([c, i]);
  }
  let done = 0;
  await pMap(
    jobs,
    async ([c, i]) => {
      const file = join(root, `class-${String(c).padStart(2, '0')}`, `img-${String(i).padStart(5, '0')}.jpg`);
      await sharp(image(c, i), { raw: { width: SIDE, height: SIDE, channels: 3 } })
        .jpeg({ quality: 85 })
        .toFile(file);
      if (++done % 5000 === 0) console.error(`generated ${done}/${jobs.length}`);
    },
    { concurrency: 4 },
  );
  return { seconds: (performance.now() - t0) / 1000, generated: jobs.length };
}

/** The tiny pretrained encoder: [N, 224, 224, 3] -> [N, 32]. */
async function writeEncoder(dir: string, seed: number): Promise<void> {
  await import('@tensorflow/tfjs-backend-cpu');
  const tf = await import('@tensorflow/tfjs-core');
  const tfl = await import('@tensorflow/tfjs-layers');
  const { saveModel } = await import('../ml/model-io.js');
  await tf.setBackend('cpu');
  const model = tfl.sequential({
    layers: [
      tfl.layers.averagePooling2d({ inputShape: [SIDE, SIDE, 3], poolSize: 4, strides: 4 }),
      tfl.layers.conv2d({
        filters: 8,
        kernelSize: 3,
        strides: 2,
        activation: 'relu',
        kernelInitializer: tfl.initializers.glorotUniform({ seed }),
      }),
      tfl.layers.globalAveragePooling2d({}),
      tfl.layers.dense({ units: 32, kernelInitializer: tfl.initializers.glorotUniform({ seed: seed + 1 }) }),
    ],
  });
  await saveModel(model, dir);
  model.dispose();
}

interface ChildRun {
  result?: ChildResult;
  killed: boolean;
  wallSeconds: number;
  code: number | null;
}

/** Runs one pipeline in a fresh process; `killAfterFeaturesMs` SIGKILLs it that long into features. */
function child(job: ChildJob, killAfterFeaturesMs?: number): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(process.execPath, ['--import', 'tsx', self, '--child', JSON.stringify(job)], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let result: ChildResult | undefined;
    let killed = false;
    let buf = '';
    p.stdout.setEncoding('utf8');
    p.stdout.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.startsWith('RESULT ')) result = JSON.parse(line.slice(7)) as ChildResult;
        else console.error(`  [${job.tag}] ${line}`);
        if (line === 'STAGE features start' && killAfterFeaturesMs !== undefined) {
          setTimeout(() => {
            if (p.exitCode === null) {
              killed = true;
              console.error(`  [${job.tag}] SIGKILL during features`);
              p.kill('SIGKILL');
            }
          }, killAfterFeaturesMs);
        }
      }
    });
    p.on('error', reject);
    p.on('close', (code) => {
      const run = { ...(result ? { result } : {}), killed, wallSeconds: (performance.now() - t0) / 1000, code };
      if (!killed && (code !== 0 || !result)) reject(new Error(`scale child ${job.tag} exited with ${code}`));
      else resolve(run);
    });
  });
}

const work = await mkdtemp(join(tmpdir(), 'bench-scale-'));
const root = values.data ?? join(work, 'data');
try {
  const gen = await generate(root);
  if (gen.generated) console.error(`generated ${gen.generated} JPEGs in ${gen.seconds.toFixed(0)} s`);
  const modelA = join(work, 'encoder-a');
  const modelB = join(work, 'encoder-b');
  await writeEncoder(modelA, 1);
  await writeEncoder(modelB, 2);
  const store = join(work, 'store');
  const job = (tag: string, n: number, model = modelA): ChildJob => ({ store, root, perClass: n, model, work, tag });

  const small = await child(job('small', smallPerClass));
  const full = await child(job('full', perClass));
  const cached = await child(job('full-cached', perClass));
  // Another encoder on the same (cached) dataset: killed during features, then resumed.
  let kill: { killedRun: ChildRun; rerun: ChildRun; featuresPublishedBeforeKill: boolean } | undefined;
  if (!values['no-kill']) {
    const killedRun = await child(job('killed', perClass, modelB), Number(values['kill-after']) * 1000);
    const rerun = await child(job('resumed', perClass, modelB));
    kill = { killedRun, rerun, featuresPublishedBeforeKill: !killedRun.killed };
  }

  const row = (r: ChildResult) => ({
    perClass: r.perClass,
    images: r.images,
    seconds: r.seconds,
    ingestSeconds: r.stages.ingest.seconds,
    featuresSeconds: r.stages.features.seconds,
    imagesPerSecond: r.images / r.seconds,
    ingestImagesPerSecond: r.images / r.stages.ingest.seconds,
    featuresImagesPerSecond: r.images / r.stages.features.seconds,
    peakRssMB: r.maxRssKb / 1024,
    cached: { ingest: r.stages.ingest.cached, encoder: r.stages.encoder.cached, features: r.stages.features.cached },
  });
  const s = row(small.result as ChildResult);
  const f = row(full.result as ChildResult);
  const c = row(cached.result as ChildResult);
  const result = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, memoryGB: totalmem() / 2 ** 30, node: process.version },
    backend: full.result?.backend,
    dataset: {
      classes,
      perClass,
      images: classes * perClass,
      side: SIDE,
      generatedSeconds: gen.generated ? gen.seconds : undefined,
      reused: values.data !== undefined && gen.generated === 0,
    },
    encoder: 'pretrained tiny tfjs model (avgpool 4, conv 3x3/2 x8, global avgpool, dense 32); DAG stopped after features',
    fractions: { [`${Math.round((100 * smallPerClass) / perClass)}%`]: s, '100%': f },
    rssRatio: f.peakRssMB / s.peakRssMB,
    resume: {
      cachedRerun: { seconds: c.seconds, wallSeconds: cached.wallSeconds, cached: c.cached, peakRssMB: c.peakRssMB },
      ...(kill
        ? {
            killDuringFeatures: {
              killedAfterFeaturesStartSeconds: Number(values['kill-after']),
              killed: kill.killedRun.killed,
              killedRunWallSeconds: kill.killedRun.wallSeconds,
              rerunSeconds: kill.rerun.result?.seconds,
              rerunCached: kill.rerun.result ? row(kill.rerun.result).cached : undefined,
              rerunFeaturesSeconds: kill.rerun.result?.stages.features.seconds,
            },
          }
        : {}),
    },
  };
  const pct = Object.keys(result.fractions)[0];
  console.log(`\n${classes} classes x ${perClass} images of ${SIDE}x${SIDE} (${classes * perClass} images), backend ${result.backend}\n`);
  console.log('| run | images | total (s) | ingest (s) | features (s) | images/s | peak RSS (MB) | cached |');
  console.log('|---|---|---|---|---|---|---|---|');
  const line = (name: string, r: ReturnType<typeof row>) =>
    console.log(
      `| ${name} | ${r.images} | ${r.seconds.toFixed(1)} | ${r.ingestSeconds.toFixed(1)} | ${r.featuresSeconds.toFixed(1)} | ` +
        `${r.imagesPerSecond.toFixed(0)} | ${r.peakRssMB.toFixed(0)} | ${
          Object.entries(r.cached)
            .filter(([, v]) => v)
            .map(([k]) => k)
            .join(', ') || '-'
        } |`,
    );
  line(`${pct} fresh`, s);
  line('100% fresh', f);
  line('100% again (same store)', c);
  if (kill?.rerun.result) line('100%, new encoder, after SIGKILL in features', row(kill.rerun.result));
  console.log(`\npeak RSS 100% / ${pct}: ${result.rssRatio.toFixed(2)}`);
  const out = join(repoRoot, 'bench', 'results', `scale-${result.date.slice(0, 10)}.json`);
  await mkdir(join(repoRoot, 'bench', 'results'), { recursive: true });
  await writeFile(out, JSON.stringify(result, null, 2) + '\n');
  console.log(`wrote ${out}`);
} finally {
  await rm(work, { recursive: true, force: true });
}
