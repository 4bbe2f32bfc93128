// Issue 13, "blocking file operations under a deadline": the report's delivery to the output
// folder (mkdir + atomic writes) runs every file operation under FS_DEADLINE_MS and fails with
// the operation and the path named; an output on /proc, /sys or /dev is refused, by the
// pipeline loader and by writeAuditOutputs itself, before anything is tried there.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FS_DEADLINE_MS, FsDeadlineError, PseudoFileSystemError, pseudoFileSystem, withFsDeadline } from '../../data/files.js';
import { writeAuditOutputs } from '../../ml/cleansed.js';
import type { AuditReport } from '../../ml/audit-report.js';
import { parsePipeline, PipelineError } from '../../client/pipeline.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const report = { dataset: { name: 'x' } } as unknown as AuditReport;

/** Runs an ES module snippet in a fresh node (tsx loaded), so that a stuck fs call pins none of this process's threads. */
function runChild(code: string, timeoutMs: number): Promise<{ rc: number | null; out: string; ms: number }> {
  return new Promise((res, rej) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: ROOT });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const killer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', rej);
    child.on('close', (rc) => {
      clearTimeout(killer);
      res({ rc, out, ms: Date.now() - t0 });
    });
  });
}

describe('file operations under a deadline', () => {
  it('FS_DEADLINE_MS is a minute', () => {
    expect(FS_DEADLINE_MS).to.equal(60_000);
  });

  it('an operation that never settles fails at the deadline, naming the operation and the path', async () => {
    const t0 = Date.now();
    let err: unknown;
    try {
      await withFsDeadline('mkdir', '/somewhere/stuck', () => new Promise<void>(() => undefined), 200);
    } catch (e) {
      err = e;
    }
    const ms = Date.now() - t0;
    expect(err).to.be.instanceOf(FsDeadlineError);
    const e = err as FsDeadlineError;
    expect(e.message).to.equal('mkdir /somewhere/stuck did not finish within 0.2 s: is it a special or unreachable file system?');
    expect(e.op).to.equal('mkdir');
    expect(e.path).to.equal('/somewhere/stuck');
    expect(e.nonRetryable).to.equal(true);
    expect(ms).to.be.within(150, 2000);
  });

  it('a full minute reads "60 s"', () => {
    expect(new FsDeadlineError('mkdir', '/proc/x', FS_DEADLINE_MS).message).to.equal(
      'mkdir /proc/x did not finish within 60 s: is it a special or unreachable file system?',
    );
  });

  it('passes through results and errors in time; a late rejection after the deadline is not unhandled', async () => {
    expect(await withFsDeadline('read', '/x', async () => 42, 1000)).to.equal(42);
    const enoent = Object.assign(new Error('ENOENT: no such file'), { code: 'ENOENT' });
    let err: unknown;
    try {
      await withFsDeadline('read', '/x', () => Promise.reject(enoent), 1000);
    } catch (e) {
      err = e;
    }
    expect(err).to.equal(enoent);
    const unhandled: unknown[] = [];
    const onUnhandled = (r: unknown) => unhandled.push(r);
    process.on('unhandledRejection', onUnhandled);
    try {
      let late: unknown;
      try {
        await withFsDeadline('write', '/late', () => new Promise((_, rej) => setTimeout(() => rej(new Error('late')), 100)), 20);
      } catch (e) {
        late = e;
      }
      expect(late).to.be.instanceOf(FsDeadlineError);
      await new Promise((r) => setTimeout(r, 200));
      expect(unhandled).to.deep.equal([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('recognises pseudo file systems by real path and by statfs; ordinary folders and /dev/shm pass', async function () {
    if (process.platform !== 'linux') this.skip();
    expect(await pseudoFileSystem('/proc/x')).to.equal('proc');
    expect(await pseudoFileSystem('/proc/self/x/y')).to.equal('proc');
    expect(await pseudoFileSystem('/sys/x')).to.equal('sysfs');
    expect(await pseudoFileSystem('/dev/x/y')).to.equal('devtmpfs');
    expect(await pseudoFileSystem('/dev/shm/out')).to.equal(undefined);
    expect(await pseudoFileSystem(join(tmpdir(), 'no', 'such', 'folder'))).to.equal(undefined);
    expect(await pseudoFileSystem('/processed/out')).to.equal(undefined); // a prefix of the text is not a folder
  });

  it('writeAuditOutputs into /proc/<x> fails at once, naming the path, and creates nothing', async function () {
    if (process.platform !== 'linux') this.skip();
    const t0 = Date.now();
    let err: unknown;
    try {
      await writeAuditOutputs('/proc/backdoor-audit-out', report, []);
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(PseudoFileSystemError);
    expect((err as Error).message).to.equal(
      '/proc/backdoor-audit-out is on a pseudo file system (proc), which cannot hold files: choose a folder on a disk',
    );
    expect((err as PseudoFileSystemError).nonRetryable).to.equal(true);
    expect(Date.now() - t0).to.be.below(2000);
    expect(await stat('/proc/backdoor-audit-out').catch(() => undefined)).to.equal(undefined);
  });

  it('a real mkdir under /proc: fails at once, or hangs and the deadline ends it naming the path (in a child process)', async function () {
    if (process.platform !== 'linux') this.skip();
    // On this project's sandbox mkdir("/proc/x") never returns; on a stock Linux kernel it fails
    // at once (ENOENT/EACCES). Either way the caller gets an answer naming the path within the
    // deadline. A child process, because the stuck call would pin one of this process's libuv threads.
    const files = new URL('../../data/files.ts', import.meta.url).href;
    const code = `
      import { mkdir } from 'node:fs/promises';
      const { withFsDeadline } = await import(${JSON.stringify(files)});
      const t0 = Date.now();
      try {
        await withFsDeadline('mkdir', '/proc/backdoor-audit-x', () => mkdir('/proc/backdoor-audit-x', { recursive: true }), 500);
        console.log('RESULT created');
      } catch (e) {
        console.log('RESULT ' + (e.name === 'FsDeadlineError' ? 'deadline' : 'error ' + e.code) + ' ' + (Date.now() - t0) + 'ms ' + e.message);
      }
      process.exit(0); // the stuck mkdir would keep the process alive
    `;
    const { rc, out, ms } = await runChild(code, 30_000);
    const line = out.split('\n').find((l) => l.startsWith('RESULT ')) ?? `(no result: rc ${rc}, ${out})`;
    console.log(`      observed: ${line} (child ran ${ms} ms)`);
    expect(rc).to.equal(0);
    expect(line).to.not.match(/^RESULT created/);
    expect(line).to.include('/proc/backdoor-audit-x');
    if (line.startsWith('RESULT deadline')) {
      expect(line).to.include('mkdir /proc/backdoor-audit-x did not finish within 0.5 s: is it a special or unreachable file system?');
    }
  });

  it('writeAuditOutputs writes both files into an ordinary folder', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deadline-'));
    try {
      await writeAuditOutputs(join(dir, 'out'), report, [], { deadlineMs: 5000 });
      expect(JSON.parse(await readFile(join(dir, 'out', 'report.json'), 'utf8'))).to.deep.equal(report);
      expect(await readFile(join(dir, 'out', 'cleansed.jsonl'), 'utf8')).to.equal('\n');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the pipeline loader refuses an output on /proc, /sys or /dev, naming the output line', async function () {
    if (process.platform !== 'linux') this.skip();
    const dir = await mkdtemp(join(tmpdir(), 'deadline-'));
    try {
      const file = join(dir, 'audit.yaml');
      const yaml = (output: string) =>
        `name: x\ndataset: {format: cifar10, split: train, imageSize: 32}\noutput: ${output}\naudit: {flow: {epochs: 1}}\n`;
      for (const [output, fs] of [
        ['/proc/x', 'proc'],
        ['/sys/kernel/x', 'sysfs'],
        ['/dev/x', 'devtmpfs'],
      ] as const) {
        let err: unknown;
        try {
          await parsePipeline(yaml(output), file);
        } catch (e) {
          err = e;
        }
        expect(err, output).to.be.instanceOf(PipelineError);
        expect((err as Error).message, output).to.include(
          `${file}:3:1: output: output folder ${output} is on a pseudo file system (${fs}), which cannot hold files: choose a folder on a disk`,
        );
      }
      expect((await parsePipeline(yaml('out'), file)).output).to.equal(join(dir, 'out'));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
