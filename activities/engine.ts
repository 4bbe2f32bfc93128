// The stage engine, shared by both executors (Temporal activities and the in-process library):
// a stage's cache key (stage, version, canonical parameters, input keys, external
// fingerprint), the probe, and the computation into a fresh artifact, published atomically,
// with its work folder (checkpoints) kept across retries and a heartbeat kept alive. What the
// stage itself sees (verified inputs, datasets closed at the end, training hooks, cancellation)
// is the StageRun of stage.ts. It knows nothing of Temporal: the executor hands it a
// StageRuntime (heartbeat, cancellation, attempt, progress updates).
import { cp, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cacheKey, type ArtifactRef, type ArtifactStore } from '../data/artifacts.js';
import { canonicalJson, sha256Hex } from '../data/hash.js';
import { STAGE_SPECS, type StageName } from '../workflows/graph.js';
import type { ProbeResult, StageGroupRequest, StageOutcome, StageRequest } from '../workflows/types.js';
import {
  INFO_FILE,
  readInfo,
  StageInputError,
  StageRun,
  type Computed,
  type LazyStage,
  type StageHook,
  type StageImpl,
  type StageRegistry,
  type StageRuntime,
} from './stage.js';

const isLazy = <S extends StageName>(entry: StageImpl<S> | LazyStage<S>): entry is LazyStage<S> => 'load' in entry;

export class StageEngine {
  private readonly loaded = new Map<StageName, Promise<StageImpl<StageName>>>();

  constructor(
    readonly store: ArtifactStore,
    private readonly impls: StageRegistry,
  ) {}

  private entry(stage: StageName): StageImpl<StageName> | LazyStage<StageName> {
    const entry = this.impls[stage] as StageImpl<StageName> | LazyStage<StageName> | undefined;
    if (!entry) throw new StageInputError(`no implementation of stage '${stage}'`);
    return entry;
  }

  /**
   * Starts loading, in the background, the stages every run loads: those whose cache key needs
   * their `identity` (the probe loads them) and those never cached (the report computes in every
   * run), so that their modules load while the run's first tasks wait on the server. A failure
   * here is left to the stage's own load, which reports it.
   */
  preloadEveryRun(): void {
    for (const stage of Object.keys(this.impls) as StageName[]) {
      if (!STAGE_SPECS[stage].cached || this.has(stage, 'identity')) this.impl(stage).catch(() => undefined);
    }
  }

  /** Whether the stage has `hook`, without loading it. */
  private has(stage: StageName, hook: StageHook): boolean {
    const entry = this.entry(stage);
    return isLazy(entry) ? entry.hooks.includes(hook) : entry[hook] !== undefined;
  }

  private impl(stage: StageName): Promise<StageImpl<StageName>> {
    const entry = this.entry(stage);
    if (!isLazy(entry)) return Promise.resolve(entry);
    let impl = this.loaded.get(stage);
    if (!impl) {
      impl = entry.load().then((loaded) => {
        const has = (['deliver', 'identity'] as const).filter((h) => loaded[h] !== undefined);
        if (has.join() !== [...entry.hooks].sort().join()) {
          // A hook the registry does not declare would be skipped by the probe (a wrong cache key).
          // A code error no retry fixes.
          const message = `stage '${stage}' has hooks [${has.join(', ')}] but activities/stages/index.ts declares [${entry.hooks.join(', ')}]`;
          throw Object.assign(new Error(message), { nonRetryable: true });
        }
        return loaded;
      });
      impl.catch(() => this.loaded.delete(stage)); // a later call tries again
      this.loaded.set(stage, impl);
    }
    return impl;
  }

  async keyOf(req: StageRequest): Promise<string> {
    if (req.key) return req.key;
    const inputs = Object.entries(req.inputs)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([role, ref]) => `${role}:${ref.key}`);
    const impl = this.has(req.stage, 'identity') ? await this.impl(req.stage) : undefined;
    const id = impl?.identity ? await impl.identity(req.params as never, this.store) : { params: req.params };
    return cacheKey(req.stage, STAGE_SPECS[req.stage].version, id.params, id.external ? [...inputs, `external:${id.external}`] : inputs);
  }

  /** The cached outcome of a request, or just its key. */
  async probe(req: StageRequest): Promise<ProbeResult> {
    const key = await this.keyOf(req);
    const ref = await this.store.lookup(req.stage, key);
    if (!ref) return { key };
    return { key, hit: { ref, info: await readInfo(this.store.dir(ref)), cached: true, seconds: 0 } };
  }

  /** Cache check (for cached stages), then compute into a fresh artifact, then deliver. */
  async run(req: StageRequest, runtime: StageRuntime): Promise<StageOutcome> {
    const key = await this.keyOf(req);
    const deliver = async (out: StageOutcome): Promise<StageOutcome> => {
      if (!this.has(req.stage, 'deliver')) return out;
      const impl = await this.impl(req.stage);
      if (!impl.deliver) return out;
      // Kept alive while it writes outside the store (a slow disk is not a dead worker): its
      // file operations run under deadlines of their own (FS_DEADLINE_MS), which end a stuck one.
      const beating = keepBeating(runtime);
      try {
        const extra = await impl.deliver(this.store.dir(out.ref), req.params as never, (line) => runtime.log(`${req.label}: ${line}`));
        return { ...out, info: { ...out.info, ...extra } };
      } finally {
        beating.stop();
      }
    };
    if (STAGE_SPECS[req.stage].cached) {
      const existing = await this.store.lookup(req.stage, key);
      if (existing) return deliver({ ref: existing, info: await readInfo(this.store.dir(existing)), cached: true, seconds: 0 });
    }
    const impl = await this.impl(req.stage); // loaded only now: a cache hit needs none of its modules
    const work = join(this.store.root, '.work', key);
    await mkdir(work, { recursive: true });
    const t0 = performance.now();
    let computed: Computed | undefined;
    const beating = keepBeating(runtime);
    let ref: ArtifactRef;
    try {
      ref = await this.store.publish(req.stage, key, async (tmp) => {
        const run = new StageRun(req, this.store, beating.runtime, tmp, work);
        try {
          computed = await impl.compute(run as StageRun<never>);
        } finally {
          await run.close();
        }
        await writeFile(join(tmp, INFO_FILE), JSON.stringify(computed.info) + '\n');
      });
    } catch (err) {
      throw explainFull(err, req.label, this.store.root);
    } finally {
      beating.stop();
    }
    const seconds = (performance.now() - t0) / 1000;
    await rm(work, { recursive: true, force: true });
    const done = computed ?? { info: await readInfo(this.store.dir(ref)) }; // another worker published first
    if (done.resumedFromEpoch) runtime.log(`${req.label}: resumed from epoch ${done.resumedFromEpoch}`);
    runtime.log(`${req.label}: computed in ${seconds.toFixed(1)} s (attempt ${runtime.attempt}): ${done.info.figure}`);
    return deliver({
      ref,
      info: done.info,
      cached: false,
      seconds,
      attempt: runtime.attempt,
      ...(done.resumedFromEpoch ? { resumedFromEpoch: done.resumedFromEpoch } : {}),
    });
  }

  /**
   * The members of a group request, each a cache hit or computed together with the other
   * misses in one `computeGroup` call, then published under its own key: the same artifact, in
   * the same layout, as computing it alone. A computed member's `seconds` is its share of the
   * group's time.
   */
  async runGroup(group: StageGroupRequest, runtime: StageRuntime): Promise<StageOutcome[]> {
    const { stage, label } = group;
    const members = group.members.map((m) => ({ ...m, stage }));
    if (members.length === 0) throw new StageInputError(`${label}: a group without members`);
    const inputsOf = (m: StageRequest) => canonicalJson(Object.entries(m.inputs).map(([role, ref]) => [role, ref.key]));
    if (members.some((m) => inputsOf(m) !== inputsOf(members[0]))) throw new StageInputError(`${label}: members with different inputs`);
    const keys = await Promise.all(members.map((m) => this.keyOf(m))); // a probe's key, when it travelled with the member
    const outcomes: StageOutcome[] = new Array<StageOutcome>(members.length);
    const misses: number[] = [];
    for (const [i, key] of keys.entries()) {
      const existing = STAGE_SPECS[stage].cached ? await this.store.lookup(stage, key) : undefined;
      if (existing) outcomes[i] = { ref: existing, info: await readInfo(this.store.dir(existing)), cached: true, seconds: 0 };
      else misses.push(i);
    }
    if (misses.length === 0) return outcomes;
    const impl = await this.impl(stage);
    if (!impl.computeGroup || impl.deliver) {
      throw Object.assign(new Error(`stage '${stage}' cannot compute a group of instances`), { nonRetryable: true });
    }
    // Kept across retries of the same group (its checkpoint); another grouping is another folder.
    const work = join(this.store.root, '.work', `group-${sha256Hex(canonicalJson(misses.map((i) => keys[i])))}`);
    const outs = join(work, 'members');
    await rm(outs, { recursive: true, force: true });
    const t0 = performance.now();
    const beating = keepBeating(runtime);
    const lead = { ...members[misses[0]], label, ...(group.reportTo ? { reportTo: group.reportTo } : {}), options: group.options };
    const groupRun = new StageRun(lead, this.store, beating.runtime, outs, work);
    const runs = misses.map(
      (i, j) => new StageRun({ ...members[i], key: keys[i] }, this.store, beating.runtime, join(outs, String(j)), work),
    );
    try {
      for (const r of runs) await mkdir(r.out, { recursive: true });
      const computed = await impl.computeGroup(runs as StageRun<never>[], groupRun as StageRun<never>);
      if (computed.length !== runs.length)
        throw new Error(`${label}: computeGroup returned ${computed.length} results for ${runs.length} members`);
      const seconds = (performance.now() - t0) / 1000;
      for (const [j, i] of misses.entries()) {
        const ref = await this.store.publish(stage, keys[i], async (tmp) => {
          for (const name of await readdir(runs[j].out)) await cp(join(runs[j].out, name), join(tmp, name), { recursive: true });
          await writeFile(join(tmp, INFO_FILE), JSON.stringify(computed[j].info) + '\n');
        });
        outcomes[i] = {
          ref,
          info: computed[j].info,
          cached: false,
          seconds: seconds / misses.length,
          attempt: runtime.attempt,
          ...(computed[j].resumedFromEpoch ? { resumedFromEpoch: computed[j].resumedFromEpoch } : {}),
        };
      }
      runtime.log(
        `${label}: computed ${misses.length} of ${members.length} together in ${seconds.toFixed(1)} s (attempt ${runtime.attempt})`,
      );
    } catch (err) {
      throw explainFull(err, label, this.store.root);
    } finally {
      beating.stop();
      await Promise.all([groupRun, ...runs].map((r) => r.close()));
    }
    await rm(work, { recursive: true, force: true });
    return outcomes;
  }
}

/**
 * The artifact store's file system filled up while a stage wrote its artifact. Retryable: the
 * partial artifact is gone (never published, its temporary folder removed), and a retry after
 * space returns computes it again (the stage's .work folder, with its checkpoints, is kept).
 */
export class StoreFullError extends Error {
  readonly code = 'ENOSPC';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreFullError';
  }
}

/**
 * `err` as a StoreFullError naming the store when the write failed with ENOSPC (Node's message
 * names no path: "ENOSPC: no space left on device, write"); other errors unchanged.
 */
function explainFull(err: unknown, label: string, root: string): unknown {
  if (err instanceof StoreFullError || !(err instanceof Error) || (err as NodeJS.ErrnoException).code !== 'ENOSPC') return err;
  return new StoreFullError(
    `${label}: no space left on device (ENOSPC) in the artifact store ${root}: free space there or point ` +
      `BACKDOOR_AUDIT_STORE at a larger disk; nothing was published, and the stage computes again on retry (${err.message})`,
    { cause: err },
  );
}

/** How often, at most, a computing stage heartbeats on its own. */
const BEAT_MS = 5000;

/**
 * A runtime whose heartbeat also repeats on its own with the last details (a bare heartbeat
 * would erase the checkpoint a retry reads back) whenever the stage has been silent for a while,
 * so that a stage loading a backend, waiting on I/O or between two short computations stays
 * alive under a heartbeat timeout of seconds. A single synchronous computation longer than the
 * timeout still needs a heartbeat of its own.
 */
function keepBeating(runtime: StageRuntime): { runtime: StageRuntime; stop: () => void } {
  const every = Math.min(BEAT_MS, (runtime.heartbeatTimeoutMs ?? Infinity) / 3);
  let last: unknown = runtime.lastHeartbeat; // the previous attempt's, until this one has its own
  let detailed = false;
  let sentAt = Date.now();
  const beat = (details?: unknown) => {
    if (details !== undefined) last = details;
    sentAt = Date.now();
    runtime.heartbeat(last);
  };
  const timer = setInterval(() => {
    // A training stage's details (its epoch, its checkpoint) must not be displaced by a bare
    // beat: the SDK sends the first heartbeat at once and throttles the next, so a bare one sent
    // first would be all a worker killed early leaves behind. Such a stage beats every batch.
    if (detailed && last === undefined) return;
    if (Date.now() - sentAt >= every) beat();
  }, every);
  timer.unref();
  return {
    runtime: { ...runtime, heartbeat: beat, detailed: () => void (detailed = true) },
    stop: () => clearInterval(timer),
  };
}
