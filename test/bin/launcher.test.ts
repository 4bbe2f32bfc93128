// The launcher (bin/backdoor-audit.js) runs the compiled build only while it is a build of the
// current sources (bin/dist.js), else the TypeScript sources through tsx with a notice: a stale
// dist/ must never run code older than the sources. Checked on a throwaway checkout whose
// "build" and "sources" only say which of them ran.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { cliEntry, distStatus, inputHashes, STAMP_FILE } from '../../bin/dist.js';
import { repoRoot } from '../../data/paths.js';

const run = promisify(execFile);

/** A `main` that prints which copy of the CLI ran. */
const fakeCli = (which: string) =>
  `export async function main(argv, io) { io.out(${JSON.stringify(which)} + ' ' + argv.join(' ')); return 0; }\n`;

describe('launcher: dist/ only while it matches the sources', function () {
  this.timeout(60_000);
  let root: string;

  /** A build of the checkout as it is now, as scripts/build.ts stamps it. */
  async function build(id = 'b1'): Promise<void> {
    await mkdir(join(root, 'dist', id, 'client'), { recursive: true });
    await writeFile(join(root, 'dist', id, 'client', 'cli.js'), fakeCli('compiled'));
    await writeFile(join(root, 'dist', STAMP_FILE), JSON.stringify({ build: id, files: inputHashes(root) }));
  }

  async function launch(env: NodeJS.ProcessEnv = {}): Promise<{ stdout: string; stderr: string }> {
    return run(process.execPath, [join(root, 'bin', 'backdoor-audit.js'), 'status', 'x'], {
      cwd: root,
      env: { ...process.env, BACKDOOR_AUDIT_SOURCES: '', ...env },
    });
  }

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'launcher-'));
    await cp(join(repoRoot, 'bin'), join(root, 'bin'), { recursive: true });
    await symlink(join(repoRoot, 'node_modules'), join(root, 'node_modules'), 'dir');
    await writeFile(join(root, 'package.json'), JSON.stringify({ type: 'module' }));
    await writeFile(join(root, 'tsconfig.json'), '{}');
    await writeFile(join(root, 'tsconfig.build.json'), JSON.stringify({ include: ['client', 'ml'] }));
    await mkdir(join(root, 'client'));
    await mkdir(join(root, 'ml'));
    await writeFile(join(root, 'client', 'cli.ts'), fakeCli('sources'));
    await writeFile(join(root, 'ml', 'model.ts'), 'export const layers: number = 18;\n');
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('runs the sources, saying why, when there is no build', async () => {
    expect(distStatus(root)).to.deep.equal({ fresh: false, reason: 'dist/ has no complete build' });
    const { stdout, stderr } = await launch();
    expect(stdout.trim()).to.equal('sources status x');
    expect(stderr).to.match(/^note: running the TypeScript sources through tsx .*dist\/ has no complete build; `npm run build`/);
    expect(stderr.trim().split('\n')).to.have.length(1);
  });

  it('runs the build, silently, while every source hashes as when it was built', async () => {
    await build();
    expect(distStatus(root)).to.deep.equal({ fresh: true, build: join(root, 'dist', 'b1') });
    // A touch changes no content: still the build.
    const later = new Date(Date.now() + 60_000);
    await utimes(join(root, 'ml', 'model.ts'), later, later);
    const { stdout, stderr } = await launch();
    expect(stdout.trim()).to.equal('compiled status x');
    expect(stderr).to.equal('');
  });

  it('runs the sources once a source changed, was added or was removed since the build', async () => {
    await build();
    await writeFile(join(root, 'ml', 'model.ts'), 'export const layers: number = 34;\n');
    let { stdout, stderr } = await launch();
    expect(stdout.trim()).to.equal('sources status x');
    expect(stderr).to.include('ml/model.ts changed since dist/ was built');

    await build('b2');
    await writeFile(join(root, 'ml', 'extra.ts'), 'export {};\n');
    expect(distStatus(root)).to.deep.equal({ fresh: false, reason: 'ml/extra.ts was added since dist/ was built' });
    await build('b3');
    await rm(join(root, 'ml', 'extra.ts'));
    ({ stdout, stderr } = await launch());
    expect(stdout.trim()).to.equal('sources status x');
    expect(stderr).to.include('ml/extra.ts was removed since dist/ was built');
  });

  it('ignores tests, and a build configuration change makes the build stale too', async () => {
    await build();
    await writeFile(join(root, 'ml', 'model.test.ts'), 'export {};\n');
    expect(distStatus(root).fresh).to.equal(true);
    await writeFile(join(root, 'tsconfig.json'), '{ "compilerOptions": {} }');
    expect(distStatus(root)).to.deep.equal({ fresh: false, reason: 'tsconfig.json changed since dist/ was built' });
  });

  it('refuses a stamp whose build folder is missing, and BACKDOOR_AUDIT_SOURCES=1 forces the sources', async () => {
    await build();
    expect(cliEntry(root, { BACKDOOR_AUDIT_SOURCES: '1' })).to.deep.equal({ compiled: false, path: join(root, 'client', 'cli.ts') });
    expect((await launch({ BACKDOOR_AUDIT_SOURCES: '1' })).stdout.trim()).to.equal('sources status x');
    await rm(join(root, 'dist', 'b1'), { recursive: true });
    expect(distStatus(root)).to.deep.equal({ fresh: false, reason: `dist/${STAMP_FILE} names no complete build` });
  });
});
