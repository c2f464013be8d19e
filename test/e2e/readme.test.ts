/**
 * The README's tour, run as written: the blocks marked `<!-- readme-test: NAME -->` are read from
 * README.md by this test (so the two cannot drift) and run line by line with bash against a real
 * `prestage serve`, with `prestage` on the PATH as `npm link` puts it there.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { makeTempDir } from '../helpers/files.js';
import { BIN, startServe, type ServeProcess } from '../helpers/server.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

/** The shell block that follows `<!-- readme-test: name -->` in the README. */
export function readmeBlock(readme: string, name: string): string {
  const marker = `<!-- readme-test: ${name} -->`;
  const at = readme.indexOf(marker);
  assert.ok(at >= 0, `README.md has no block marked ${marker}`);
  const m = /^```sh\n([\s\S]*?)^```/m.exec(readme.slice(at + marker.length));
  assert.ok(m, `no \`\`\`sh block after ${marker}`);
  return m[1]!;
}

interface Ran {
  readonly line: string;
  readonly stdout: string;
}

describe('the README, as written', () => {
  let dir: string;
  let work: string;
  let serve: ServeProcess;
  let env: NodeJS.ProcessEnv;
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8');

  before(async () => {
    dir = await makeTempDir('prestage-readme-');
    work = join(dir, 'work');
    mkdirSync(work);
    // What `npm link` gives: a `prestage` command on the PATH.
    const binDir = join(dir, 'bin');
    mkdirSync(binDir);
    writeFileSync(join(binDir, 'prestage'), `#!/bin/sh\nexec '${process.execPath}' '${BIN}' "$@"\n`);
    chmodSync(join(binDir, 'prestage'), 0o755);
    symlinkSync(join(REPO, 'examples'), join(work, 'examples'));
    const data = join(dir, 'data');
    serve = await startServe(data);
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PRESTAGE_')));
    // The CLI finds the server and, on loopback, its admin token in the data directory.
    env = { ...clean, PATH: `${binDir}:/usr/bin:/usr/sbin:${process.env.PATH ?? ''}`, PRESTAGE_URL: serve.url, PRESTAGE_DATA: data };
  });
  after(async () => {
    await serve?.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs each command line of a block in order (comments are the shell's own); stops at the first failure. */
  function runBlock(name: string): Ran[] {
    const ran: Ran[] = [];
    for (const line of readmeBlock(readme, name).split('\n')) {
      if (line.trim() === '' || line.trim().startsWith('#')) continue;
      let stdout: string;
      try {
        stdout = execFileSync('bash', ['-eo', 'pipefail', '-c', line], { cwd: work, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 });
      } catch (e) {
        const err = e as { status?: number; stdout?: string; stderr?: string };
        assert.fail(`README line failed (exit ${err.status}):\n  ${line}\n${err.stderr ?? ''}${err.stdout ?? ''}`);
      }
      ran.push({ line, stdout });
    }
    return ran;
  }

  const out = (ran: Ran[], start: string): string => {
    const r = ran.find((x) => x.line.startsWith(start));
    assert.ok(r, `the block has a line starting ${start}`);
    return r.stdout;
  };

  it('runs the tour: import, pool, host, provision, the host reads its copy over NBD, release', () => {
    const ran = runBlock('tour');
    assert.match(out(ran, 'prestage image import'), /^imported ubuntu-24\.04@1 /);
    assert.match(out(ran, 'prestage provision web-01 ubuntu-24.04 '), /outcome\s+(warm|joined|cold)/);
    // nbdinfo printed the export the host sees: 2 GiB.
    assert.match(out(ran, 'nbdinfo'), /export-size:\s*2147483648/);
    assert.match(out(ran, 'prestage release'), /^released web-01/);
  });

  it('runs the template section: a demo golden, the example template, a host that gets its documents and boots its copy, a rollover', () => {
    const ran = runBlock('templates');
    assert.match(out(ran, 'prestage template apply'), /built web-berlin@1/);
    assert.match(out(ran, 'curl'), /hostname: web-017/);
    assert.match(out(ran, 'curl'), /ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRvdXIta2V5/);
    const boot = out(ran, 'qemu-system-x86_64');
    assert.match(boot, /PRESTAGE-DEMO:done/, 'the host booted its copy');
    assert.match(boot, /nameserver 10\.40\.0\.53/, "the template's resolv.conf is on the host's disk");
    assert.match(out(ran, 'prestage image import debian-12 debian-12-v2.raw'), /^imported debian-12@2 /);
  });

  it('every prestage command line the README shows is one the CLI knows', () => {
    const shell = [...readme.matchAll(/^```sh\n([\s\S]*?)^```/gm)].map((m) => m[1]!).join('\n');
    const commands = new Set([...shell.matchAll(/^\s*prestage ([a-z-]+)(?: ([a-z-]+))?/gm)].map((m) => [m[1], m[2]].filter(Boolean).join(' ')));
    assert.ok(commands.size > 10, `found the README's commands (${[...commands].join(', ')})`);
    for (const c of commands) {
      const [cmd, sub] = c.split(' ');
      const text = execFileSync(process.execPath, [BIN, cmd!, '--help'], { encoding: 'utf8', env });
      if (sub !== undefined && /^Commands:/m.test(text)) assert.match(text, new RegExp(`^  ${sub}\\b`, 'm'), `prestage ${c}`);
    }
  });
});
