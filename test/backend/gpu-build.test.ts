// The GPU build of the native backend (`scripts/install-native-tf.sh --gpu`: tfjs-node-gpu's addon
// compiled against the PyPI `tensorflow` wheel, with the CUDA wheels of its `and-cuda` extra) must
// load on a machine without a GPU, say plainly that it found no GPU, and train on the CPU; on a
// machine with one, `auto` must take it and name the device.
//
// Behind a flag, because it downloads about 2.4 GB of wheels (its cache then takes 4.4 GB):
//   BACKDOOR_AUDIT_TEST_GPU_BUILD=1 npx mocha test/backend/gpu-build.test.ts
// It builds into its own cache (.cache/gpu-build-test, or GPU_BUILD_TEST_CACHE) and never touches
// node_modules: the package goes to <cache>/node_modules/@tensorflow/tfjs-node-gpu, and a child
// process maps the import of '@tensorflow/tfjs-node-gpu' in backend/backend.ts there with a
// module-resolution hook. A second run reuses the cache (the script is idempotent).
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { expect } from 'chai';
import { repoRoot } from '../../data/paths.js';

const FLAG = 'BACKDOOR_AUDIT_TEST_GPU_BUILD';
const SKIP_REASON = `set ${FLAG}=1 to build the GPU backend (2.4 GB of wheels from PyPI, 4.4 GB on disk) and test it`;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

/** Runs a command, echoing its output with a prefix as it comes. */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, prefix: string): Promise<Run> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const echo = (chunk: Buffer) =>
      chunk
        .toString()
        .split('\n')
        .filter((l) => l.trim())
        .forEach((l) => console.log(`      ${prefix} ${l}`));
    child.stdout.on('data', (c: Buffer) => ((stdout += c), echo(c)));
    child.stderr.on('data', (c: Buffer) => ((stderr += c), echo(c)));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, seconds: (Date.now() - started) / 1000 }));
  });
}

function duBytes(path: string): number {
  return Number(execFileSync('du', ['-sb', path], { encoding: 'utf8' }).split('\t')[0]);
}

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(0)} MB`;

function gpuPresent(): boolean {
  try {
    return /^GPU /m.test(execFileSync('nvidia-smi', ['-L'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
  } catch {
    return false;
  }
}

// The child: selectBackend('auto') as the audit calls it, then two training steps of the audit's
// ResNet-18 (width 4) on whatever it chose. Prints one JSON line.
const CHILD = `
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
const { selectBackend, currentDevice } = await import(process.env.GPU_TEST_BACKEND_URL);
const { buildResNet18 } = await import(process.env.GPU_TEST_RESNET_URL);
const lines = [];
const started = Date.now();
const info = await selectBackend('auto', 'training', (l) => { lines.push(l); console.error(l); });
const selectSeconds = (Date.now() - started) / 1000;
const b = tf.backend();
const model = buildResNet18({ stem: 'cifar', width: 4, inputSize: 32, seed: 0, classes: 3 });
model.compile({ optimizer: tf.train.sgd(0.05), loss: 'categoricalCrossentropy' });
const x = tf.randomUniform([2, 32, 32, 3], 0, 1, 'float32', 7);
const y = tf.oneHot(tf.tensor1d([0, 2], 'int32'), 3);
const losses = [];
const trainStarted = Date.now();
for (let i = 0; i < 2; i++) losses.push(Number(await model.trainOnBatch(x, y)));
const trainSeconds = (Date.now() - trainStarted) / 1000;
// Which native packages this process loaded (CommonJS, so they are in require's cache).
const loaded = [...new Set(Object.keys(createRequire(import.meta.url).cache)
  .map((p) => p.match(/^(.*\\/@tensorflow\\/tfjs-node(?:-gpu)?)\\//)?.[1]).filter(Boolean))];
console.log('RESULT ' + JSON.stringify({ info, device: currentDevice(), lines, tfjsBackend: tf.getBackend(), isGPUPackage: b.isGPUPackage,
  isUsingGpuDevice: b.isUsingGpuDevice, tfVersion: b.binding?.TF_Version, losses, loaded, selectSeconds, trainSeconds }));
`;

describe(`GPU build of the native backend (install-native-tf.sh --gpu; ${FLAG}=1)`, function () {
  // Downloads and unpacks a few GB and compiles with one job on a shared machine.
  this.timeout(60 * 60_000);

  const cache = process.env['GPU_BUILD_TEST_CACHE'] ?? join(repoRoot, '.cache', 'gpu-build-test');
  const pkgDir = join(cache, 'node_modules', '@tensorflow', 'tfjs-node-gpu');
  const env = { NATIVE_TF_GPU_CACHE: cache, TFJS_NODE_GPU_DIR: pkgDir, NATIVE_TF_JOBS: '1' };

  before(function () {
    if (process.env[FLAG] !== '1') {
      console.log(`      skipped: ${SKIP_REASON}`);
      this.skip();
    }
    mkdirSync(cache, { recursive: true });
  });

  it('setup --gpu builds it into its own cache, and a second run does nothing', async function () {
    const first = await run('bash', ['scripts/install-native-tf.sh', '--gpu'], env, '[setup --gpu]');
    expect(first.code, first.stdout).to.equal(0);
    // A fresh cache builds (OK); one left by an earlier run is reused (nothing to do).
    expect(first.stdout).to.match(/^install-native-tf --gpu: (OK: |.*nothing to do)/m);
    expect(existsSync(join(pkgDir, 'lib', 'napi-v8', 'tfjs_binding.node'))).to.equal(true);
    const version = /^wheel=tensorflow==(.+)$/m.exec(readFileSync(join(pkgDir, 'deps', 'BUILD-INFO'), 'utf8'))?.[1];
    const cudaDir = join(cache, `cuda-${version}`);
    // The CUDA libraries TensorFlow dlopen()s are linked beside libtensorflow.
    const libs = readdirSync(join(pkgDir, 'deps', 'lib'));
    for (const re of [
      /^libcudart\.so\.\d+$/,
      /^libcublas\.so\.\d+$/,
      /^libcudnn\.so\.\d+$/,
      /^libcufft\.so\.\d+$/,
      /^libcusparse\.so\.\d+$/,
    ]) {
      expect(
        libs.some((l) => re.test(l)),
        `${re} in deps/lib`,
      ).to.equal(true);
    }

    const second = await run('bash', ['scripts/install-native-tf.sh', '--gpu'], env, '[setup --gpu, again]');
    expect(second.code).to.equal(0);
    expect(second.stdout).to.match(/nothing to do/);

    const wheel = readdirSync(cache).find((f) => f.startsWith(`tensorflow-${version}-`) && f.endsWith('.whl'))!;
    const cudaWheels = readFileSync(join(cudaDir, 'COMPLETE'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => Number(l.split(' ')[0]));
    console.log(
      `      sizes: tensorflow ${version} wheel ${mb(statSync(join(cache, wheel)).size)}; ` +
        `${cudaWheels.length} CUDA wheels ${mb(cudaWheels.reduce((a, b) => a + b, 0))} downloaded, ` +
        `${mb(duBytes(join(cudaDir, 'nvidia')))} unpacked; package with deps/ ${mb(duBytes(pkgDir))} (CUDA libraries as symlinks)`,
    );
    console.log(`      times: first run ${first.seconds.toFixed(0)} s, second run ${second.seconds.toFixed(1)} s`);
  });

  it("loads; without a GPU 'auto' says so plainly and trains on the CPU with it (with one, takes it)", async function () {
    if (!existsSync(join(pkgDir, 'lib', 'napi-v8', 'tfjs_binding.node'))) this.skip();
    // Maps the bare import in backend/backend.ts to the package built above.
    const main = pathToFileURL(join(pkgDir, JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')).main)).href;
    writeFileSync(
      join(cache, 'hook.mjs'),
      `export async function resolve(specifier, context, next) {\n` +
        `  return next(specifier === '@tensorflow/tfjs-node-gpu' ? ${JSON.stringify(main)} : specifier, context);\n}\n`,
    );
    writeFileSync(join(cache, 'register.mjs'), `import { register } from 'node:module';\nregister('./hook.mjs', import.meta.url);\n`);
    // Inside the project tree, so its bare imports resolve from the project's node_modules.
    writeFileSync(join(cache, 'child.mts'), CHILD);
    const child = await run(
      process.execPath,
      ['--import', 'tsx', '--import', pathToFileURL(join(cache, 'register.mjs')).href, join(cache, 'child.mts')],
      {
        GPU_TEST_BACKEND_URL: pathToFileURL(join(repoRoot, 'backend', 'backend.ts')).href,
        GPU_TEST_RESNET_URL: pathToFileURL(join(repoRoot, 'ml', 'resnet.ts')).href,
        TF_CPP_MIN_LOG_LEVEL: '1',
      },
      '[child]',
    );
    expect(child.code, child.stderr).to.equal(0);
    const result = JSON.parse(/^RESULT (.*)$/m.exec(child.stdout)![1]!);
    // One native TensorFlow in the process: the GPU build, registered once.
    expect(child.stderr).not.to.match(/already registered/);
    expect(result.loaded).to.deep.equal([pkgDir]);
    expect(result.isGPUPackage).to.equal(true);
    expect(result.losses.every(Number.isFinite), String(result.losses)).to.equal(true);

    if (gpuPresent()) {
      expect(result.info.name).to.equal('tensorflow-gpu');
      expect(result.isUsingGpuDevice).to.equal(true);
      expect(result.lines.join('\n')).to.match(/^backend: tensorflow-gpu runs on GPU: /m);
    } else {
      expect(result.info.name).to.equal('tensorflow');
      expect(result.tfjsBackend).to.equal('tensorflow');
      expect(result.isUsingGpuDevice).to.equal(false);
      expect(result.info.skipped[0].name).to.equal('tensorflow-gpu');
      expect(result.info.skipped[0].reason).to.match(
        /^the GPU build \(@tensorflow\/tfjs-node-gpu, libtensorflow [\d.]+\) loaded but found no GPU/,
      );
      expect(result.lines[0]).to.match(/^backend: using tensorflow; not used: tensorflow-gpu \(the GPU build .* found no GPU/);
      expect(result.device).to.equal(`CPU: libtensorflow ${result.tfVersion} (@tensorflow/tfjs-node-gpu)`);
    }
    console.log(
      `      backend ${result.info.name} (${result.device}); select ${result.selectSeconds.toFixed(1)} s; ` +
        `2 ResNet-18 (width 4, batch 2) steps ${result.trainSeconds.toFixed(1)} s, losses ${result.losses.map((l: number) => l.toFixed(4)).join(', ')}`,
    );
  });
});
