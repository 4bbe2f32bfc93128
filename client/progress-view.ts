// Showing the `progress` query: one cli-progress bar per stage on a terminal, plain lines
// (one per change) otherwise, and a table for `status`.
import cliProgress from 'cli-progress';
import type { ShownProgress, ShownStage, StageRetry } from './audit.js';

export interface ProgressView {
  update(p: ShownProgress | undefined): void;
  /** A log line (worker output) printed without breaking the display. */
  log(line: string): void;
  stop(): void;
}

/** One line of a failure message, short enough for a table cell. */
function brief(message: string): string {
  const first = message.split('\n')[0] ?? '';
  return first.length > 200 ? `${first.slice(0, 197)}...` : first;
}

function retryText(retry: StageRetry): string {
  return `retrying (attempt ${retry.attempt}${retry.maximumAttempts ? ` of ${retry.maximumAttempts}` : ''})`;
}

/** The last failure and the next try: a wall-clock time, so a line does not change every second. */
function retryDetail(retry: StageRetry): string {
  const next = retry.nextAttemptAt ? `next try at ${retry.nextAttemptAt.toLocaleTimeString()}` : '';
  const failure = retry.lastFailure ? `last failure: ${brief(retry.lastFailure)}` : '';
  return [failure, next].filter(Boolean).join('; ');
}

/** A retry that waits for its attempt to start (back-off, or no worker): the row says so instead of its state. */
const waiting = (r: ShownStage): StageRetry | undefined => (r.retry && !r.retry.running ? r.retry : undefined);

function stateText(r: ShownStage): string {
  const retry = waiting(r);
  if (retry) return retryText(retry);
  const epochs = r.epochs ? ` ${r.epoch ?? 0}/${r.epochs}` : '';
  const resumed = r.resumedFromEpoch ? ` (resumed from epoch ${r.resumedFromEpoch})` : '';
  const n = r.retry?.attempt ?? r.attempt;
  const attempt = n && n > 1 ? ` attempt ${n}` : '';
  return `${r.state}${epochs}${resumed}${attempt}`;
}

/** The figure column: the figure, a failed stage's error, or a retrying stage's last failure. */
function detail(r: ShownStage): string {
  if (r.retry) return [r.retry.running ? r.figure : undefined, retryDetail(r.retry)].filter(Boolean).join('; ');
  if (r.state === 'failed' && r.error) return brief(r.error);
  return r.figure ?? (r.error ? brief(r.error) : '');
}

/** e.g. `encoder: retrying (attempt 2 of 5, last failure: ...; next try at 14:03:07)` */
export function retryLine(id: string, retry: StageRetry): string {
  const more = retryDetail(retry);
  return `${id}: ${retryText(retry).slice(0, -1)}${more ? `, ${more}` : ''})`;
}

function line(r: ShownStage): string {
  const retry = waiting(r);
  if (retry) return retryLine(r.id, retry);
  const time = r.seconds !== undefined && r.state !== 'cached' ? ` ${r.seconds.toFixed(1)} s` : '';
  const figure = r.figure ? ` - ${r.figure}` : '';
  const error = r.error ? ` - ${brief(r.error)}` : '';
  return `${r.id}: ${stateText(r)}${time}${figure}${error}`;
}

/** A fixed-width table of every stage (the `status` command). */
export function formatProgress(p: ShownProgress): string {
  const head =
    `${p.workflowId}  pipeline ${p.pipeline}  dataset ${p.dataset}  verdict ${p.verdict}` +
    (p.targetClasses.length ? `  targets ${p.targetClasses.join(', ')}` : '') +
    (p.done ? '  (finished)' : `  (at ${p.currentStage})`);
  const rows = p.stages.map((r) => [
    r.id,
    stateText(r),
    r.seconds !== undefined && r.state !== 'cached' ? `${r.seconds.toFixed(1)} s` : '',
    detail(r),
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

/**
 * `text` cut to `width` characters at a word boundary with an ellipsis, so a figure column never
 * ends mid-number ("kept 3000, relabelled 0," was all a narrow terminal showed of a report).
 */
export function fitFigure(text: string, width: number): string {
  if (text.length <= width) return text;
  if (width < 2) return '';
  const cut = text.slice(0, width - 1);
  const space = cut.lastIndexOf(' ');
  return `${(space > width / 2 ? cut.slice(0, space) : cut).replace(/[,;:\s-]+$/, '')}…`;
}

/** Characters of a bar row other than the figure: ' {id} |{bar}| {state} '. */
const BAR_SIZE = 24;
const STATE_WIDTH = 18;

/** One bar per stage (terminal). A figure too long for the terminal is cut, and printed whole once the stage ends. */
function barView(stream: NodeJS.WriteStream = process.stderr): ProgressView {
  const multi = new cliProgress.MultiBar(
    { format: ' {id} |{bar}| {state} {figure}', stream, hideCursor: true, clearOnComplete: false, autopadding: true, barsize: BAR_SIZE },
    cliProgress.Presets.shades_classic,
  );
  const bars = new Map<string, cliProgress.SingleBar>();
  const printedWhole = new Set<string>();
  return {
    update(p) {
      if (!p) return;
      const width = Math.max(...p.stages.map((r) => r.id.length));
      const room = (stream.columns ?? 100) - (width + BAR_SIZE + STATE_WIDTH + 8);
      for (const r of p.stages) {
        const finished = r.state === 'done' || r.state === 'cached';
        const total = r.epochs ?? 1;
        const value = finished ? total : (r.epoch ?? 0);
        const full = detail(r);
        const figure = fitFigure(full, room);
        const payload = { id: r.id.padEnd(width), state: stateText(r).padEnd(STATE_WIDTH), figure };
        const bar = bars.get(r.id);
        if (!bar) bars.set(r.id, multi.create(total, value, payload));
        else {
          bar.setTotal(total);
          bar.update(value, payload);
        }
        if ((finished || r.state === 'failed') && figure !== full && !printedWhole.has(r.id)) {
          printedWhole.add(r.id);
          multi.log(`${r.id}: ${full}\n`);
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
