// Showing the `progress` query: one cli-progress bar per stage on a terminal, plain lines
// (one per change) otherwise, and a table for `status`.
import cliProgress from 'cli-progress';
import type { AuditProgress, StageProgress } from '../workflows/types.js';

export interface ProgressView {
  update(p: AuditProgress | undefined): void;
  /** A log line (worker output) printed without breaking the display. */
  log(line: string): void;
  stop(): void;
}

function stateText(r: StageProgress): string {
  const epochs = r.epochs ? ` ${r.epoch ?? 0}/${r.epochs}` : '';
  const resumed = r.resumedFromEpoch ? ` (resumed from epoch ${r.resumedFromEpoch})` : '';
  const attempt = r.attempt && r.attempt > 1 ? ` attempt ${r.attempt}` : '';
  return `${r.state}${epochs}${resumed}${attempt}`;
}

function line(r: StageProgress): string {
  const time = r.seconds !== undefined && r.state !== 'cached' ? ` ${r.seconds.toFixed(1)} s` : '';
  const figure = r.figure ? ` - ${r.figure}` : '';
  const error = r.error ? ` - ${r.error}` : '';
  return `${r.id}: ${stateText(r)}${time}${figure}${error}`;
}

/** A fixed-width table of every stage (the `status` command). */
export function formatProgress(p: AuditProgress): string {
  const head =
    `${p.workflowId}  pipeline ${p.pipeline}  dataset ${p.dataset}  verdict ${p.verdict}` +
    (p.targetClasses.length ? `  targets ${p.targetClasses.join(', ')}` : '') +
    (p.done ? '  (finished)' : `  (at ${p.currentStage})`);
  const rows = p.stages.map((r) => [
    r.id,
    stateText(r),
    r.seconds !== undefined && r.state !== 'cached' ? `${r.seconds.toFixed(1)} s` : '',
    r.figure ?? r.error ?? '',
  ]);
  const widths = [0, 1, 2].map((c) => Math.max(5, ...rows.map((row) => row[c].length)));
  const fmt = (row: string[]) =>
    row
      .map((cell, c) => (c < 3 ? cell.padEnd(widths[c]) : cell))
      .join('  ')
      .trimEnd();
  return [head, fmt(['stage', 'state', 'time', 'figure']), ...rows.map(fmt)].join('\n');
}

/** Plain lines: one each time a stage's state, epoch or figure changes. */
function lineView(write: (text: string) => void): ProgressView {
  const last = new Map<string, string>();
  let waiting = false;
  return {
    update(p) {
      if (!p) {
        if (!waiting) write('waiting for a worker to answer...');
        waiting = true;
        return;
      }
      waiting = false;
      for (const r of p.stages) {
        if (r.state === 'pending') continue;
        const text = line(r);
        if (last.get(r.id) !== text) {
          last.set(r.id, text);
          write(text);
        }
      }
    },
    log(text) {
      write(text);
    },
    stop() {},
  };
}

/** One bar per stage (terminal). */
function barView(stream: NodeJS.WriteStream = process.stderr): ProgressView {
  const multi = new cliProgress.MultiBar(
    { format: ' {id} |{bar}| {state} {figure}', stream, hideCursor: true, clearOnComplete: false, autopadding: true, barsize: 24 },
    cliProgress.Presets.shades_classic,
  );
  const bars = new Map<string, cliProgress.SingleBar>();
  return {
    update(p) {
      if (!p) return;
      const width = Math.max(...p.stages.map((r) => r.id.length));
      for (const r of p.stages) {
        const finished = r.state === 'done' || r.state === 'cached';
        const total = r.epochs ?? 1;
        const value = finished ? total : (r.epoch ?? 0);
        const payload = { id: r.id.padEnd(width), state: stateText(r).padEnd(18), figure: r.figure ?? r.error ?? '' };
        const bar = bars.get(r.id);
        if (!bar) bars.set(r.id, multi.create(total, value, payload));
        else {
          bar.setTotal(total);
          bar.update(value, payload);
        }
      }
    },
    log(text) {
      multi.log(`${text}\n`);
    },
    stop() {
      multi.stop();
    },
  };
}

export function progressView(stream: NodeJS.WriteStream = process.stderr): ProgressView {
  return stream.isTTY ? barView(stream) : lineView((t) => stream.write(`${t}\n`));
}
