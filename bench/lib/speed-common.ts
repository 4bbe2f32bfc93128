// What the parts of `npm run bench -- speed` (bench/speed.ts) share: the settings parsed from its
// command line, the JSON's measurement record, and how a measurement of ours runs (a child
// process of bench/speed.ts in --worker mode, bench/lib/speed-worker.ts).
import { join } from 'node:path';
import type { BackendName } from '../../backend/backend.js';
import { repoRoot } from '../../data/paths.js';
import { nativeThreadEnv, runChild, type Outcome } from './processes.js';
import type { Task } from './speed-worker.js';

// Every measurement of ours runs in a child process: bench/speed.ts in `--worker` mode (bench/lib/speed-worker.ts).
export function ours<T>(task: Task, threads: number): Promise<Outcome<T & { backend: string }>> {
  const speed = join(repoRoot, 'bench', 'speed.ts');
  return runChild(process.execPath, ['--import', 'tsx', speed, '--worker', JSON.stringify(task)], nativeThreadEnv(threads), (out) => {
    const line = out.split('\n').find((l) => l.startsWith('RESULT '));
    if (!line) throw new Error('no RESULT line');
    return JSON.parse(line.slice('RESULT '.length)) as T & { backend: string };
  });
}

export const f1 = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

/**
 * One figure of the JSON: a throughput (images/s) or a time (s) of one implementation, with
 * `ratioVsTorch`, ours over PyTorch's in throughput terms (above 1: we are faster; a time's ratio
 * is PyTorch's time over ours), against the PyTorch row with the same thread count when there is
 * one, else the first; null when PyTorch was not measured.
 */
export interface Measurement {
  measurement: 'simclr-train' | 'inference' | 'flows-and-density';
  impl: string;
  threads: string;
  unit: 'images/s' | 's';
  value: number;
  torchThreads: string | null;
  ratioVsTorch: number | null;
}

/** The PyTorch row a row of ours is compared with: same threads when measured, else the first measured. */
export function torchRowFor<R extends { impl: string; threads: string }>(rows: R[], row: R, has: (r: R) => boolean): R | undefined {
  const torch = rows.filter((r) => r.impl === 'PyTorch' && has(r));
  return torch.find((r) => r.threads === row.threads) ?? torch[0];
}

/** What main() parsed from the command line: the shape of every measurement. */
export interface Settings {
  quick: boolean;
  /** Native TensorFlow's intra-op threads in our workers. */
  threads: number;
  width: number;
  batch: number;
  steps: number;
  /** The batch each backend is measured at (see main). */
  batchFor: Record<string, number>;
  inferBatches: number;
  flowEpochs: number;
  flowClasses: number;
  flowPerClass: number;
  flowTrainClasses: number;
  flowDim: number;
  torchThreads: number[];
  backends: BackendName[];
  skipTorch: boolean;
  /** The audit's flow epochs: measured flow time is scaled to them. */
  configuredEpochs: number;
  /** The pipeline's flow group size for flowClasses classes (workflows/dag.ts). */
  groupSize: number;
  hidden: number;
}
