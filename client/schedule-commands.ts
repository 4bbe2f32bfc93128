// `backdoor-audit schedule ...`: nightly audits as Temporal Schedules (client/schedule.ts does the work).
import { InvalidArgumentError, Option, type Command } from 'commander';
import { storeRoot } from '../data/paths.js';
import { addConnectionOptions, onStoreQueues, withTemporal, withUiUrl, type CliIo } from './cli-session.js';
import { ensureSearchAttributes } from './connection.js';
import { loadPipeline } from './pipeline.js';
import {
  backfillSchedule,
  createSchedule,
  deleteSchedule,
  describeSchedule,
  formatScheduleTable,
  listSchedules,
  OVERLAP_POLICIES,
  pauseSchedule,
  triggerSchedule,
  unpauseSchedule,
  updateSchedule,
} from './schedule.js';

/** Parses a --from / --to value; a usage error (exit 2) when it is no date. */
function isoDate(value: string): Date {
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) throw new InvalidArgumentError('not an ISO 8601 date-time (e.g. 2025-06-01T00:00:00Z)');
  return d;
}

export function addScheduleCommands(program: Command, io: CliIo): void {
  const schedule = program.command('schedule').description('audits on a cron schedule (Temporal Schedules, overlap policy SKIP)');
  addConnectionOptions(
    schedule
      .command('create <pipeline>')
      .requiredOption('--cron <expr>', 'cron expression, e.g. "0 2 * * *" (02:00 UTC daily)')
      .option('--id <scheduleId>', 'schedule id (default audit-schedule-<pipeline name>)')
      .option('--paused', 'create it paused'),
  ).action(async (file: string, opts: Record<string, unknown>) => {
    const pipeline = await loadPipeline(file);
    await withTemporal(opts, io, async (t) => {
      await ensureSearchAttributes(t.connection, t.config.namespace).catch(() => undefined);
      // On the embedded server the schedule's audits go to this store's queues (see README).
      const id = await createSchedule(
        t.client,
        withUiUrl(t.config.address === undefined ? onStoreQueues(pipeline, storeRoot()) : pipeline, t),
        {
          cron: String(opts.cron),
          ...(typeof opts.id === 'string' ? { scheduleId: opts.id } : {}),
          paused: opts.paused === true,
        },
      );
      io.out(id);
    });
  });
  addConnectionOptions(
    schedule.command('list').description("every schedule: cron, paused (and why), next run, and the last run's verdict"),
  ).action(async (opts: Record<string, unknown>) => {
    await withTemporal(opts, io, async (t) => {
      io.out(formatScheduleTable(await listSchedules(t.client)));
    });
  });
  addConnectionOptions(
    schedule
      .command('pause <scheduleId>')
      .description('stop starting audits (a running one goes on)')
      .option('--note <text>', 'why, shown by `schedule list`'),
  ).action(async (id: string, opts: Record<string, unknown>) => {
    await withTemporal(opts, io, async (t) => {
      await pauseSchedule(t.client, id, typeof opts.note === 'string' ? opts.note : undefined);
      io.out(`paused ${id}`);
    });
  });
  addConnectionOptions(schedule.command('unpause <scheduleId>').option('--note <text>', 'note to replace the pause note')).action(
    async (id: string, opts: Record<string, unknown>) => {
      await withTemporal(opts, io, async (t) => {
        await unpauseSchedule(t.client, id, typeof opts.note === 'string' ? opts.note : undefined);
        const next = (await describeSchedule(t.client, id)).nextRuns[0];
        io.out(`unpaused ${id}; next run ${next ?? '-'}`);
      });
    },
  );
  addConnectionOptions(
    schedule
      .command('update <scheduleId> [pipeline]')
      .description('change the cron and/or the pipeline file a schedule audits (policies, pause state and note are kept)')
      .option('--cron <expr>', 'new cron expression (replaces the whole spec)'),
  ).action(async (id: string, file: string | undefined, opts: Record<string, unknown>, cmd: Command) => {
    if (file === undefined && typeof opts.cron !== 'string') cmd.error('error: schedule update needs a pipeline file, --cron, or both');
    const pipeline = file === undefined ? undefined : await loadPipeline(file);
    await withTemporal(opts, io, async (t) => {
      // The same queues as `schedule create` would give it (see there).
      const audit = pipeline && t.config.address === undefined ? onStoreQueues(pipeline, storeRoot()) : pipeline;
      await updateSchedule(t.client, id, {
        ...(typeof opts.cron === 'string' ? { cron: opts.cron } : {}),
        ...(audit ? { pipeline: audit } : {}),
      });
      const s = await describeSchedule(t.client, id);
      io.out(
        `updated ${id}: pipeline ${s.pipeline ?? '?'}, cron ${s.cron.join(' | ')}, next run ${s.paused ? '- (paused)' : (s.nextRuns[0] ?? '-')}`,
      );
    });
  });
  addConnectionOptions(
    schedule
      .command('backfill <scheduleId>')
      .description('start now the audits the cron would have started between --from and --to (each audits the dataset as it is now)')
      .requiredOption('--from <iso>', 'window start, e.g. 2025-06-01T00:00:00Z', isoDate)
      .requiredOption('--to <iso>', 'window end (inclusive)', isoDate)
      .addOption(
        new Option('--overlap <policy>', "overlap policy for the backfilled runs (default: the schedule's, SKIP)").choices(
          Object.keys(OVERLAP_POLICIES),
        ),
      ),
  ).action(async (id: string, opts: Record<string, unknown>) => {
    await withTemporal(opts, io, async (t) => {
      const overlap = typeof opts.overlap === 'string' ? OVERLAP_POLICIES[opts.overlap] : undefined;
      const r = await backfillSchedule(t.client, id, { from: opts.from as Date, to: opts.to as Date, ...(overlap ? { overlap } : {}) });
      const times = Number.isNaN(r.times) ? '' : `${r.times} scheduled time${r.times === 1 ? '' : 's'} in the window, `;
      io.out(
        `backfill of ${id} accepted: ${times}overlap policy ${r.overlap}${r.overlap === 'SKIP' ? ' (a time is skipped while an audit of this schedule runs)' : ''}`,
      );
    });
  });
  addConnectionOptions(schedule.command('delete <scheduleId>')).action(async (id: string, opts: Record<string, unknown>) => {
    await withTemporal(opts, io, async (t) => {
      await deleteSchedule(t.client, id);
      io.out(`deleted ${id}`);
    });
  });
  addConnectionOptions(
    schedule.command('trigger <scheduleId>').description('start the scheduled audit now (skipped while one runs)'),
  ).action(async (id: string, opts: Record<string, unknown>) => {
    await withTemporal(opts, io, async (t) => {
      await triggerSchedule(t.client, id);
      io.out(`triggered ${id}`);
    });
  });
}
