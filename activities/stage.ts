// What a stage implementation sees and provides (activities/stages/*): the runtime the executor
// lends it, the StageRun with its verified inputs, output and work folders and training hooks,
// the StageImpl contract and its lazy registry, and the errors a stage throws. StageEngine
// (engine.ts) keys, probes, runs and publishes stages through these.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ArtifactRef, ArtifactStore } from '../data/artifacts.js';
import { pathExists } from '../data/files.js';
// Types only: TensorFlow (backend/) and the image codec (data/ingest's sharp) load when a stage
// computes, never in a run whose stages are all cached.
import type { ShardedDataset } from '../data/dataset.js';
import type { BackendChoice, BackendInfo } from '../backend/backend.js';
import type { TrainHooks, TrainProgress } from '../ml/loop.js';
import type { StageName } from '../workflows/graph.js';
import type { StageParams } from '../workflows/stage-params.js';
import type { EpochUpdate, StageInfo, StageRequest } from '../workflows/types.js';

/** Every artifact's small facts (StageInfo), beside its files. */
export const INFO_FILE = 'info.json';

/** What the executor lends a running stage. */
export interface StageRuntime {
  /** Aborts when the stage is cancelled (the stage stops at its next batch). */
  signal?: AbortSignal;
  /** 1 on the first try. */
  attempt: number;
  /** Details of the last heartbeat of the previous attempt, if any. */
  lastHeartbeat?: unknown;
  /** Keeps the stage alive (Temporal heartbeat); cheap enough to call every batch. */
  heartbeat(details?: unknown): void;
  /** The heartbeat timeout the stage runs under, if any (the engine beats well within it). */
  heartbeatTimeoutMs?: number;
  /** Set by the engine: the stage will heartbeat details of its own (a training loop's), so no bare beats. */
  detailed?(): void;
  log(line: string): void;
  /** Sends an epoch's progress to whoever shows it; resolves when sent (or given up). */
  epoch?(update: EpochUpdate): Promise<void>;
}

/** An input artifact no longer matches its hashes: the producer must run again. */
export class CorruptArtifactError extends Error {
  constructor(
    message: string,
    readonly key: string,
  ) {
    super(message);
    this.name = 'CorruptArtifact';
  }
}

/** The request is wrong in a way no retry fixes (a missing input, a class without samples). */
export class StageInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PipelineInputError';
  }
}

/** What a training stage heartbeats; read back on retry. */
export interface TrainingHeartbeat {
  epoch: number;
  epochs: number;
  loss?: number;
  checkpoint?: string;
  batch?: number;
  batches?: number;
}

/** What a stage function sees: its parameters, its inputs (verified), its output and work folders. */
export class StageRun<P = unknown> {
  private readonly opened: ShardedDataset[] = [];
  constructor(
    readonly req: StageRequest<P>,
    private readonly store: ArtifactStore,
    readonly runtime: StageRuntime,
    /** The artifact folder being written (renamed into place when the stage returns). */
    readonly out: string,
    /** Scratch folder kept across retries of the same key (checkpoints). */
    readonly work: string,
  ) {}

  get params(): P {
    return this.req.params;
  }
  get label(): string {
    return this.req.label;
  }
  log(line: string): void {
    this.runtime.log(`${this.req.label}: ${line}`);
  }

  has(role: string): boolean {
    return this.req.inputs[role] !== undefined;
  }

  /** The folder of an input artifact, after checking it against its hashes. */
  async input(role: string): Promise<string> {
    const ref = this.req.inputs[role];
    if (!ref) throw new StageInputError(`${this.req.label}: missing input '${role}'`);
    if (!(await this.store.verify(ref))) {
      // Never here (not even quarantined by another consumer): this worker was sent another
      // store's work. No retry or recomputation here can fix that.
      if (!(await pathExists(this.store.dir(ref))) && !(await this.store.quarantined(ref.key))) {
        throw new StageInputError(
          `${this.req.label}: input '${role}': artifact ${ref.key} (${ref.stage}) is not in this worker's store ${this.store.root}: ` +
            'the run and this worker use different stores',
        );
      }
      await this.store.lookup(ref.stage, ref.key); // moves the damaged copy to quarantine
      throw new CorruptArtifactError(
        `${this.req.label}: input '${role}' (${ref.stage} ${ref.key.slice(0, 12)}) does not match its hashes`,
        ref.key,
      );
    }
    return this.store.dir(ref);
  }

  /** The small facts its producer recorded about an input. */
  async inputInfo(role: string): Promise<StageInfo> {
    return readInfo(await this.input(role));
  }

  /**
   * The folder of an artifact named inside an input (a lineage's parent) rather than passed as
   * one, or why it cannot be used: absent from this store, or no longer matching its hashes.
   */
  async referenced(ref: ArtifactRef): Promise<{ dir: string; info: StageInfo } | { why: string }> {
    if (await this.store.verify(ref)) return { dir: this.store.dir(ref), info: await readInfo(this.store.dir(ref)) };
    const present = await pathExists(this.store.dir(ref));
    return {
      why: `${ref.stage} artifact ${ref.key.slice(0, 12)} ${present ? 'does not match its hashes (corrupted)' : 'is not in the store'}`,
    };
  }

  get artifactStore(): ArtifactStore {
    return this.store;
  }

  /** An input dataset, open until the stage ends. */
  async dataset(role = 'dataset'): Promise<ShardedDataset> {
    const { openDataset } = await import('../data/dataset.js');
    const ds = await openDataset(join(await this.input(role), 'dataset'));
    this.opened.push(ds);
    return ds;
  }

  /** Selects the tensor backend; its explanation is logged once per process. */
  async backend(choice: BackendChoice, purpose: 'training' | 'inference'): Promise<BackendInfo> {
    const { selectBackend } = await import('../backend/backend.js');
    return selectBackend(choice, purpose, (line) => {
      if (loggedBackendLines.has(line)) return;
      loggedBackendLines.add(line);
      this.runtime.log(line);
    });
  }

  /** Hooks for ml/loop.ts: checkpoint in the work folder, heartbeat every batch, progress once a second. */
  training(): TrainHooks {
    const { runtime, req } = this;
    runtime.detailed?.();
    const last = runtime.lastHeartbeat as TrainingHeartbeat | undefined;
    if (runtime.attempt > 1) {
      this.log(
        `attempt ${runtime.attempt}; last heartbeat ${last ? `at epoch ${last.epoch}/${last.epochs}${last.checkpoint ? `, checkpoint ${last.checkpoint}` : ''}` : 'none'}`,
      );
    }
    let state: TrainingHeartbeat = {
      epoch: last?.epoch ?? 0,
      epochs: last?.epochs ?? 0,
      ...(last?.checkpoint ? { checkpoint: last.checkpoint } : {}),
    };
    let lastUpdate = 0;
    return {
      ...(runtime.signal ? { signal: runtime.signal } : {}),
      checkpointDir: join(this.work, 'checkpoint'),
      checkpointEvery: req.options?.checkpointEvery ?? 1,
      log: (line) => runtime.log(line),
      onBatch: (batch, batches) => runtime.heartbeat({ ...state, batch, batches } satisfies TrainingHeartbeat),
      onEpoch: async (p: TrainProgress) => {
        state = {
          epoch: p.epoch,
          epochs: p.epochs,
          loss: p.loss,
          ...(p.checkpoint ? { checkpoint: p.checkpoint } : state.checkpoint ? { checkpoint: state.checkpoint } : {}),
        };
        runtime.heartbeat(state);
        const now = Date.now();
        if (runtime.epoch && (now - lastUpdate >= 1000 || p.epoch === p.epochs)) {
          lastUpdate = now;
          const sent = runtime.epoch({
            id: req.label,
            epoch: p.epoch,
            epochs: p.epochs,
            loss: p.loss,
            resumedFromEpoch: p.resumedFromEpoch ?? 0,
            attempt: runtime.attempt,
          });
          if (p.epoch === p.epochs) await sent; // the last one lands before the stage's completion
        }
      },
    };
  }

  async close(): Promise<void> {
    await Promise.all(this.opened.map((d) => d.close().catch(() => undefined)));
  }
}

const loggedBackendLines = new Set<string>();

export interface Computed {
  info: StageInfo;
  resumedFromEpoch?: number;
}

/** One stage's implementation: what its artifact holds and how the cache recognises it. */
export interface StageImpl<S extends StageName> {
  /** Fills `run.out` with the artifact. */
  compute(run: StageRun<StageParams[S]>): Promise<Computed>;
  /**
   * Computes several instances of a per-class stage in one go (StageEngine.runGroup): fills
   * every `runs[i].out` and returns each one's info, in order. The members share their inputs;
   * read them, heartbeat and checkpoint through `group` (the group's label, its work folder).
   */
  computeGroup?(runs: StageRun<StageParams[S]>[], group: StageRun<StageParams[S]>): Promise<Computed[]>;
  /**
   * The parameters that enter the key and the fingerprint of inputs outside the store (a
   * dataset on disk, a pretrained model folder, the previous audit's report.json and the
   * artifacts it names). Default: all parameters, nothing external.
   */
  identity?(params: StageParams[S], store: ArtifactStore): Promise<{ params: unknown; external?: string }>;
  /** Runs after the artifact is published (or found): e.g. copying the report to the output folder. */
  deliver?(dir: string, params: StageParams[S], log: (line: string) => void): Promise<Partial<StageInfo>>;
}

export type StageImpls = { [S in StageName]: StageImpl<S> };

export type StageHook = 'identity' | 'deliver';

/**
 * A stage implementation loaded when first needed (activities/stages/index.ts), so that a process
 * loads only the modules, TensorFlow among them, of the stages it computes. `hooks` says which
 * optional hooks it has: a cache probe then knows, without loading it, whether the key needs its
 * `identity`. Checked against the implementation when it loads.
 */
export interface LazyStage<S extends StageName> {
  load(): Promise<StageImpl<S>>;
  hooks: readonly StageHook[];
}

/** Each stage's implementation, loaded (StageImpl) or loaded on first use (LazyStage). */
export type StageRegistry = { [S in StageName]: StageImpl<S> | LazyStage<S> };

/** The StageInfo recorded in an artifact folder. */
export async function readInfo(dir: string): Promise<StageInfo> {
  return JSON.parse(await readFile(join(dir, INFO_FILE), 'utf8')) as StageInfo;
}
