// The one orchestration of an audit: walks AUDIT_DAG (workflows/graph.ts) for a pipeline and
// runs every node through an executor, each as soon as its inputs exist. Two executors use it:
// the Temporal workflow (workflows/audit.ts) and the in-process library (activities/in-process.ts).
//
// Deterministic: no I/O, clocks or randomness, no Temporal import. Only artifact references
// and small facts pass through here; the bytes stay in the artifact store.
import { AUDIT_DAG, STAGE_SPECS, type DagNode, type NodeFacts, type StageName } from './graph.js';
import type { AuditRunInfo } from '../ml/audit-report.js';
import type { ArtifactRef, Pipeline, StageOutcome } from './types.js';

/** What an executor does with one node: run its stage (cache probe, then compute). */
export interface StageExecutor {
  run(id: string, stage: StageName, params: unknown, inputs: Record<string, ArtifactRef>): Promise<StageOutcome>;
  /**
   * Runs the instances of a per-class node (Temporal: one child workflow each). `attempt`
   * counts repairs of the same instance (a recomputation after its artifact was corrupted).
   */
  runPerClass?(
    id: string,
    stage: StageName,
    classIndex: number,
    className: string,
    params: unknown,
    inputs: Record<string, ArtifactRef>,
    attempt: number,
  ): Promise<StageOutcome>;
  /**
   * Runs the instances of a grouped per-class node (`grouped` in STAGE_SPECS) for a group of
   * classes together (Temporal: one child workflow per group, one activity computing the
   * group's misses). Without it every instance runs alone. `id` names the group (`flow[0-4]`);
   * `attempt` counts its repairs. Resolves to the members' outcomes, in member order.
   */
  runClassGroup?(
    id: string,
    stage: StageName,
    members: ClassInstance[],
    inputs: Record<string, ArtifactRef>,
    attempt: number,
  ): Promise<StageOutcome[]>;
  /** The rows the audit will have, before anything runs (and once more when the classes are known). */
  plan?(rows: { id: string; stage: StageName }[]): void;
  /** Every node's outcome, as it arrives. */
  completed?(id: string, stage: StageName, outcome: StageOutcome): void;
  /** The artifact key a failure blames as corrupted, if it is such a failure. */
  corruptArtifact?(err: unknown): string | undefined;
  /** The Temporal run executing the DAG, recorded in the report. */
  runInfo?: AuditRunInfo;
}

/** One class's instance of a per-class node. */
export interface ClassInstance {
  /** Progress row and timing name: `flow[3]`. */
  id: string;
  classIndex: number;
  className: string;
  params: unknown;
}

/**
 * Classes per group of a grouped per-class node: `temporal.flowGroupSize` when the pipeline
 * sets it, else the classes split across the default CPU worker's activity slots
 * (DEFAULT_GROUP_SLOTS), at most MAX_DEFAULT_GROUP per group (so 1,000 classes are 16 groups,
 * not 1,000 activities, and a group's stacked weights stay small).
 */
export function flowGroupSize(pipeline: Pipeline, classes: number): number {
  return pipeline.temporal.flowGroupSize ?? defaultFlowGroupSize(classes);
}
/** The group size when the pipeline sets none: the classes split across the default slots. */
export function defaultFlowGroupSize(classes: number): number {
  return Math.max(1, Math.min(MAX_DEFAULT_GROUP, Math.ceil(classes / DEFAULT_GROUP_SLOTS)));
}
/** The default CPU worker's concurrent activities (worker/index.ts cpuConcurrency). */
export const DEFAULT_GROUP_SLOTS = 2;
/** 64 flows of 512-d features, hidden 64: ~25 MB per stacked weight and Adam moment. */
export const MAX_DEFAULT_GROUP = 64;

/** An audit the pipeline cannot run (raised before any compute that would fail anyway). */
export class AuditInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PipelineInputError';
  }
}

export interface DagResult {
  /** Outcome per node id that ran (`flow[3]` for per-class instances). */
  outcomes: Record<string, StageOutcome>;
  classes: string[];
  timings: Record<string, number>;
}

/** How often one consumer may trigger the recomputation of a corrupted input. */
const MAX_REPAIRS = 2;

/** The nodes that run for this pipeline, in declaration order. */
export function activeNodes(pipeline: Pipeline, dag: readonly DagNode[] = AUDIT_DAG): DagNode[] {
  return dag.filter((n) => n.when?.(pipeline) ?? true);
}

export async function runAuditDag(pipeline: Pipeline, executor: StageExecutor, dag: readonly DagNode[] = AUDIT_DAG): Promise<DagResult> {
  const nodes = activeNodes(pipeline, dag);
  const active = new Set(nodes.map((n) => n.id));
  for (const n of nodes) checkInputs(n, active, dag);
  const perClass = (n: DagNode) => 'perClass' in STAGE_SPECS[n.stage];
  // Per-class nodes appear as their instances (`flow[3]`), planned once the classes are known.
  executor.plan?.(nodes.filter((n) => !perClass(n)).map((n) => ({ id: n.id, stage: n.stage })));

  const outcomes: Record<string, StageOutcome> = {};
  const timings: Record<string, number> = {};
  const artifacts: Record<string, string> = {};
  const cached = new Set<string>();
  let classes: string[] = [];
  // Who produced each artifact key, so that a consumer that finds its input corrupted can have
  // it recomputed (the producer's probe quarantines the damaged copy and it runs again).
  const producers = new Map<string, () => Promise<StageOutcome>>();
  const results = new Map<string, Promise<StageOutcome[]>>();

  // Recomputations after a corruption, by the key of the damaged artifact: every consumer of
  // it (not only the one that found the damage) waits for the one repair and reads the result.
  const repairs = new Map<string, Promise<ArtifactRef>>();

  /** Records a node's (or instance's) outcome; `rerun` recomputes it if a consumer finds it corrupted. */
  function record(id: string, out: StageOutcome, rerun: () => Promise<StageOutcome>): void {
    producers.set(out.ref.key, rerun);
    timings[id] = out.seconds;
    outcomes[id] = out;
    artifacts[id] = out.ref.key;
    if (out.cached) cached.add(id);
    else cached.delete(id);
  }

  async function withRepair(id: string, inputs: Record<string, ArtifactRef>, run: () => Promise<StageOutcome>): Promise<StageOutcome> {
    const out = await repairing(inputs, run);
    record(id, out, run);
    return out;
  }

  /** Runs `run`; when it fails on a corrupted input, has the input's producer recompute it and tries again. */
  async function repairing<T>(inputs: Record<string, ArtifactRef>, run: () => Promise<T>): Promise<T> {
    const fromRepair = new Set<string>(); // input keys this consumer already took from a repair
    for (let attempt = 0; ; attempt++) {
      for (const role of Object.keys(inputs)) {
        const pending = repairs.get(inputs[role].key);
        if (!pending) continue;
        inputs[role] = await pending;
        fromRepair.add(inputs[role].key);
      }
      try {
        return await run();
      } catch (err) {
        const key = executor.corruptArtifact?.(err);
        const producer = key === undefined ? undefined : producers.get(key);
        if (key === undefined || !producer || attempt >= MAX_REPAIRS) throw err;
        // A repair already under way (or done) is shared; one that this consumer found damaged again is redone.
        if (!repairs.has(key) || fromRepair.has(key))
          repairs.set(
            key,
            producer().then((o) => o.ref),
          );
      }
    }
  }

  async function runNode(n: DagNode): Promise<StageOutcome[]> {
    // Resolve inputs: wait for every producer this node names.
    const inputs: Record<string, ArtifactRef> = {};
    for (const [role, from] of Object.entries(n.inputs)) {
      const producer = (typeof from === 'string' ? [from] : from).find((id) => active.has(id));
      if (producer === undefined) continue; // optional, checked by checkInputs
      const outs = await (results.get(producer) as Promise<StageOutcome[]>);
      if (isPerClassRole(n.stage, role)) outs.forEach((o, y) => (inputs[`${role}-${y}`] = o.ref));
      else inputs[role] = outs[0].ref;
    }
    const spec = STAGE_SPECS[n.stage];
    if ('perClass' in spec && spec.perClass) {
      await results.get('ingest'); // the classes come from the training set's ingest
      const groupRunner = executor.runClassGroup;
      if ('grouped' in spec && spec.grouped && groupRunner) {
        const instances = classes.map((className, y): ClassInstance => ({
          id: `${n.id}[${y}]`,
          classIndex: y,
          className,
          params: n.params(pipeline, facts(y)),
        }));
        const size = flowGroupSize(pipeline, classes.length);
        const groups: ClassInstance[][] = [];
        for (let i = 0; i < instances.length; i += size) groups.push(instances.slice(i, i + size));
        const outs = await Promise.all(
          groups.map(async (members) => {
            const own = { ...inputs };
            const id = `${n.id}[${members[0].classIndex}-${members[members.length - 1].classIndex}]`;
            let attempt = 0;
            const run = () => groupRunner(id, n.stage, members, own, attempt++);
            const got = await repairing(own, run);
            // A member's repair runs its group again: the intact members are cache hits there.
            got.forEach((out, i) => record(members[i].id, out, () => run().then((again) => again[i])));
            return got;
          }),
        );
        return outs.flat();
      }
      return Promise.all(
        classes.map((className, y) => {
          const id = `${n.id}[${y}]`;
          const params = n.params(pipeline, facts(y));
          const own = { ...inputs };
          let attempt = 0;
          const run = executor.runPerClass
            ? () => (executor.runPerClass as NonNullable<StageExecutor['runPerClass']>)(id, n.stage, y, className, params, own, attempt++)
            : () => executor.run(id, n.stage, params, own);
          return withRepair(id, own, run);
        }),
      );
    }
    const params = n.params(pipeline, facts(0));
    const out = await withRepair(n.id, inputs, () => executor.run(n.id, n.stage, params, inputs));
    if (n.id === 'ingest') {
      classes = [...(out.info.classes ?? [])];
      if (classes.length < 2) throw new AuditInputError(`ingest found ${classes.length} class(es); an audit needs at least 2`);
      const fanned = nodes.filter(perClass);
      executor.plan?.(fanned.flatMap((m) => classes.map((_, y) => ({ id: `${m.id}[${y}]`, stage: m.stage }))));
    }
    executor.completed?.(n.id, n.stage, out);
    return [out];
  }

  // Warnings in DAG order (per-class instances by class), whatever order the stages finished in.
  const warnings = (): string[] =>
    Object.entries(outcomes)
      .sort(([a], [b]) => order(a) - order(b))
      .flatMap(([id, o]) => (o.info.warnings ?? []).map((w) => `${id}: ${w}`));
  const order = (id: string): number => {
    const m = /^(.*)\[(\d+)\]$/.exec(id);
    const i = nodes.findIndex((n) => n.id === (m ? m[1] : id));
    return i * 1e6 + (m ? Number(m[2]) : 0);
  };
  const facts = (classIndex: number): NodeFacts => ({
    classes,
    classIndex,
    timings: { ...timings },
    warnings: warnings(),
    cached: [...cached].sort((a, b) => order(a) - order(b)),
    // In DAG order, not completion order: the same audit gives the same report in either executor.
    artifacts: Object.fromEntries(Object.entries(artifacts).sort(([a], [b]) => order(a) - order(b))),
    ...(executor.runInfo ? { run: executor.runInfo } : {}),
  });

  // Each node starts once every node before it has started, and runs when its inputs exist:
  // the test set ingests while the encoder trains. Starting in declaration order keeps the
  // sequence of commands the same on every replay.
  for (const n of nodes) {
    const p = runNode(n);
    p.catch(() => undefined); // observed below; keeps an early failure from going unhandled
    results.set(n.id, p);
  }
  // Fail as soon as any node fails, not when its turn in the list comes.
  await new Promise<void>((resolve, reject) => {
    let left = nodes.length;
    for (const p of results.values())
      p.then(() => {
        if (--left === 0) resolve();
      }, reject);
  });
  return { outcomes, classes, timings };
}

function isPerClassRole(stage: StageName, role: string): boolean {
  return (STAGE_SPECS[stage].inputs as readonly string[]).includes(`${role}*`);
}

/** Every declared role is wired, every wired role is declared, required producers run. */
function checkInputs(n: DagNode, active: Set<string>, dag: readonly DagNode[]): void {
  const declared = STAGE_SPECS[n.stage].inputs as readonly string[];
  const name = (r: string) => r.replace(/[?*]$/, '');
  for (const role of Object.keys(n.inputs)) {
    if (!declared.some((r) => name(r) === role)) throw new Error(`DAG node ${n.id}: input '${role}' is not an input of stage ${n.stage}`);
    const from = n.inputs[role];
    for (const id of typeof from === 'string' ? [from] : from)
      if (!dag.some((m) => m.id === id)) throw new Error(`DAG node ${n.id}: input '${role}' names unknown node '${id}'`);
  }
  for (const r of declared) {
    const from = n.inputs[name(r)];
    if (from === undefined) throw new Error(`DAG node ${n.id}: stage input '${name(r)}' is not wired`);
    const runs = (typeof from === 'string' ? [from] : from).some((id) => active.has(id));
    if (!runs && !r.endsWith('?')) throw new Error(`DAG node ${n.id}: no producer of required input '${name(r)}' runs`);
  }
}
