#!/usr/bin/env node
// Runs the compiled CLI in dist/ (made by `npm run build`, which ./scripts/install.sh and
// `npm pack` run). Nothing is compiled at run time.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// The server's file and librbd control calls (a clone's removal takes seconds) run on libuv's
// thread pool, which must not be the 4 threads it starts with; it is sized once, at first use.
if (process.argv[2] === 'serve') process.env.UV_THREADPOOL_SIZE ??= '16';

const root = fileURLToPath(new URL('..', import.meta.url));
const main = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write(`prestage: ${root}dist/ is missing: run \`npm run build\` there (./scripts/install.sh does)\n`);
  process.exit(1);
}
warnIfStale();
const { main: run } = await import(main.href);
await run();

/** In a checkout, a dist/ older than a source file runs old code: say so (a package has no src/). */
function warnIfStale() {
  const src = `${root}src`;
  const info = `${root}dist/.built`; // written by every `npm run build`
  // Told to a person at a terminal; scripts and tests read only what the command says.
  if (!process.stderr.isTTY || !existsSync(src) || !existsSync(info)) return;
  const built = statSync(info).mtimeMs;
  const newer = (dir) =>
    readdirSync(dir, { withFileTypes: true }).some((e) => (e.isDirectory() ? newer(`${dir}/${e.name}`) : e.name.endsWith('.ts') && statSync(`${dir}/${e.name}`).mtimeMs > built));
  if (newer(src)) process.stderr.write('prestage: warning: src/ changed since the last build; run `npm run build`\n');
}
