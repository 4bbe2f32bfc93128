// Interrupts of the CLI: bin/ turns the first SIGINT / SIGTERM into an aborted AbortSignal whose
// reason is the signal's name; commands say at once what the interrupt does (onInterrupt), stop
// waiting (untilInterrupted), and end with an InterruptedError whose exit code is the shell's.
// `run` cancels or detaches from its audit (interruptRun).
import { constants as osConstants } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { StartedAudit } from './audit.js';

export type SignalName = 'SIGINT' | 'SIGTERM';

/** The process was asked to stop. Its exit code is the shell's for a signal: 128 + its number (SIGINT 130, SIGTERM 143). */
export class InterruptedError extends Error {
  constructor(readonly signalName: SignalName) {
    super(`interrupted (${signalName})`);
    this.name = 'InterruptedError';
  }
  get exitCode(): number {
    return 128 + osConstants.signals[this.signalName];
  }
}

export const interruptOf = (signal: AbortSignal): InterruptedError =>
  new InterruptedError(signal.reason === 'SIGTERM' ? 'SIGTERM' : 'SIGINT');

/** `work`, or an InterruptedError as soon as `signal` aborts (`work` is left to settle unobserved). */
export async function untilInterrupted<T>(signal: AbortSignal | undefined, work: Promise<T>): Promise<T> {
  if (!signal) return work;
  work.catch(() => undefined);
  if (signal.aborted) throw interruptOf(signal);
  let onAbort: () => void = () => undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(interruptOf(signal));
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([work, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/** Calls `say` the moment `signal` aborts (to say at once what the interrupt does); returns the function that stops listening. */
export function onInterrupt(signal: AbortSignal | undefined, say: (name: SignalName) => void): () => void {
  if (!signal) return () => undefined;
  const listener = () => say(interruptOf(signal).signalName);
  signal.addEventListener('abort', listener, { once: true });
  return () => signal.removeEventListener('abort', listener);
}

/** How long `run` waits for a cancelled audit to close before it exits anyway. */
const CANCEL_WAIT_MS = 20_000;

export type InterruptAction = 'cancel' | 'detach';

/**
 * What `run` does on its first interrupt, once the audit has started: SIGINT cancels the audit
 * (or detaches, per --on-interrupt; an audit this run only attached to is detached from by
 * default), SIGTERM always detaches. Says what it does at once; throws InterruptedError.
 */
export async function interruptRun(
  started: StartedAudit,
  action: InterruptAction,
  name: SignalName,
  inProcess: boolean,
  say: (line: string) => void,
): Promise<never> {
  const id = started.workflowId;
  if (name === 'SIGINT' && action === 'cancel') {
    say(
      `interrupted: cancelling audit ${id}; a running stage stops at its next batch and keeps its checkpoint ` +
        `(run the pipeline again to resume). Ctrl-C again exits at once.`,
    );
    await started.handle.cancel().catch(() => undefined); // already closed: nothing to cancel
    const closed = await Promise.race([
      started.handle.result().then(
        () => true,
        () => true,
      ),
      sleep(CANCEL_WAIT_MS, false, { ref: false }),
    ]);
    const status = closed ? (await started.handle.describe().catch(() => undefined))?.status.name : undefined;
    say(
      closed
        ? `audit ${id} ${status === 'CANCELLED' ? 'cancelled' : `closed: ${status?.toLowerCase() ?? 'unknown'}`}`
        : `audit ${id}: cancellation requested; it completes when a worker next runs the audit (backdoor-audit status ${id})`,
    );
  } else {
    const worker = inProcess
      ? "; this process's worker stops (a running stage is cancelled within seconds, at a batch boundary, keeps its checkpoint and is retried by the next worker or run of this pipeline)"
      : '';
    say(`interrupted (${name}): detaching; audit ${id} keeps running${worker}. Follow it with: backdoor-audit watch ${id}`);
  }
  throw new InterruptedError(name);
}
