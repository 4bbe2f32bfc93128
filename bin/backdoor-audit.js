#!/usr/bin/env node
// Launcher: runs the compiled CLI in dist/ when it is a build of the current sources (bin/dist.js
// checks), else registers tsx and runs the TypeScript sources as they are, saying so: compiling
// them costs seconds at every start, a build once.
import { constants } from 'node:os';
import { pathToFileURL } from 'node:url';
import { cliEntry } from './dist.js';

const entry = cliEntry();
if (!entry.compiled) {
  if (entry.notice) process.stderr.write(`${entry.notice}\n`);
  const { register } = await import('tsx/esm/api');
  register();
}
const { main } = await import(pathToFileURL(entry.path).href);
const stop = new AbortController();
let interrupted = 0;
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    // First signal: the command says what it does and does it within seconds (`run` cancels or
    // detaches from its audit, a worker shuts down), told through the AbortSignal with the
    // signal's name as reason. Second: exit now, with the shell's code for the signal (130, 143).
    if (++interrupted > 1) process.exit(128 + constants.signals[sig]);
    stop.abort(sig);
  });
}
const code = await main(process.argv.slice(2), {
  out: (t) => process.stdout.write(`${t}\n`),
  err: (t) => process.stderr.write(`${t}\n`),
  signal: stop.signal,
});
process.exit(code);
