// Child processes of the side-by-side benches: our measurement workers and the PyTorch reference
// (bench/torch/, run from .venv-bench: scripts/setup-bench-venv.sh), and the thread settings both
// sides run with.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../../data/paths.js';

export const TORCH_PYTHON = join(repoRoot, '.venv-bench', 'bin', 'python');

/** What a child process gave back: its parsed result, or the first error line it printed. */
export interface Outcome<T> {
  ok: boolean;
  result?: T;
  error?: string;
}

/**
 * What native TensorFlow reads for its thread pools (single-threaded wasm and cpu ignore it):
 * `threads` intra-op, one inter-op (eager ops run one after another).
 */
export function nativeThreadEnv(threads: number): Record<string, string> {
  return { TF_NUM_INTRAOP_THREADS: String(threads), TF_NUM_INTEROP_THREADS: '1', OMP_NUM_THREADS: String(threads) };
}

/** Runs `cmd` to its end; a non-zero exit or unparseable output is an Outcome with the reason, never a throw. */
export function runChild<T>(cmd: string, args: string[], env: NodeJS.ProcessEnv, parse: (stdout: string) => T): Promise<Outcome<T>> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => {
      if (code !== 0) {
        const lines = stderr.split('\n').filter((l) => /error|Error/.test(l));
        resolve({ ok: false, error: (lines[0] ?? stderr.trim().split('\n').pop() ?? `exit ${code}`).trim().slice(0, 200) });
        return;
      }
      try {
        resolve({ ok: true, result: parse(stdout) });
      } catch (err) {
        resolve({ ok: false, error: `unreadable output: ${(err as Error).message}` });
      }
    });
  });
}

/** Runs bench/torch/<script> with `args`; its last stdout line is its JSON result. */
export function runTorch<T>(script: string, args: string[]): Promise<Outcome<T>> {
  if (!existsSync(TORCH_PYTHON)) {
    return Promise.resolve({ ok: false, error: 'no .venv-bench (run scripts/setup-bench-venv.sh)' });
  }
  return runChild(TORCH_PYTHON, [join(repoRoot, 'bench', 'torch', script), ...args], {}, (out) => {
    const line = out.trim().split('\n').pop() ?? '';
    return JSON.parse(line) as T;
  });
}
