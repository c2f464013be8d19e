/**
 * The tgtd supervisor with a real tgtd: no tgtd outlives its prestage, a left-over one is found
 * and cleaned up (only when its owner is dead), a portal it cannot have fails loudly, and a tgtd
 * that dies is restarted with backoff until it can be.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { ConflictError, UnavailableError } from '../../src/domain/index.js';
import { Tgtadm, Tgtd, TGTD_OWNER_ENV } from '../../src/exporters/iscsi/index.js';
import { findTgtd, formatTag, isAlive, tagOf, type ProcessTag } from '../../src/exporters/iscsi/proc.js';
import { makeTempDir, waitFor } from '../helpers/files.js';
import { freePort, requireIscsiTools } from '../helpers/iscsi-tools.js';

const sbinPath = `${process.env.PATH ?? ''}:/usr/sbin:/sbin`;

function listen(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(port, '127.0.0.1', () => resolve(srv));
  });
}

describe('tgtd supervisor', () => {
  let dir: string;
  /** Processes this suite started by hand, killed at the end if still there. */
  const started: ChildProcess[] = [];

  before(async () => {
    requireIscsiTools();
    dir = await makeTempDir('prestage-tgtd-');
  });

  after(async () => {
    for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** A tgtd started by hand on runDir's control socket, as a crash (or a person) might leave one. */
  async function strayTgtd(runDir: string, owner: string | undefined): Promise<ProcessTag> {
    await mkdir(runDir, { recursive: true });
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: sbinPath, TGT_IPC_SOCKET: join(runDir, 'tgtd') };
    if (owner !== undefined) env[TGTD_OWNER_ENV] = owner;
    const child = spawn('tgtd', ['-f', '-C', '0', '--iscsi', `portal=127.0.0.1:${await freePort()}`], { env, stdio: 'ignore', detached: true });
    started.push(child);
    const admin = new Tgtadm({ socketBase: join(runDir, 'tgtd'), controlPort: 0 });
    await waitFor('the stray tgtd to answer', () => admin.systemInfo().then(() => true, () => false), 10_000);
    const tag = await tagOf(child.pid!);
    assert.ok(tag);
    return tag;
  }

  it('a prestage that is killed takes its tgtd along', async () => {
    const runDir = join(dir, 'crash');
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/helpers/iscsi-tgtd-child.ts', runDir, String(await freePort())], { stdio: ['ignore', 'pipe', 'inherit'] });
    started.push(child);
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (b: Buffer) => {
        out += b.toString();
        if (out.includes('\n')) resolve(out.split('\n')[0]!);
      });
      child.once('exit', (code) => reject(new Error(`the child exited (${code}) before starting tgtd`)));
    });
    const { pid } = JSON.parse(line) as { pid: number };
    const tag = await tagOf(pid);
    assert.ok(tag && (await isAlive(tag)));
    child.kill('SIGKILL');
    await waitFor('tgtd to die with its parent', async () => !(await isAlive(tag)), 10_000);
    // Its control socket is free again for the next prestage.
    const next = new Tgtd({ runDir, portal: { host: '127.0.0.1', port: await freePort() } });
    await next.start();
    await next.stop();
  });

  it('kills at start a tgtd that a dead prestage left on its control socket', async () => {
    const runDir = join(dir, 'stale');
    // Pids stay below pid_max: this owner cannot be running.
    const pidMax = Number((await readFile('/proc/sys/kernel/pid_max', 'utf8')).trim());
    const stray = await strayTgtd(runDir, `${pidMax}:1`);
    const tgtd = new Tgtd({ runDir, portal: { host: '127.0.0.1', port: await freePort() } });
    await tgtd.start();
    try {
      assert.equal(await isAlive(stray), false);
      assert.notEqual(tgtd.pid, stray.pid);
      assert.equal((await findTgtd(join(runDir, 'tgtd'), 0, TGTD_OWNER_ENV)).length, 1);
    } finally {
      await tgtd.stop();
    }
  });

  it("leaves alone a tgtd of a running prestage, or one prestage did not start, and says so", async () => {
    const self = await tagOf(process.pid);
    assert.ok(self);
    for (const [what, owner, message] of [
      ['a running owner', formatTag(self), /running prestage/],
      ['no owner', undefined, /not started by prestage/],
    ] as const) {
      const runDir = join(dir, `live-${owner === undefined ? 'none' : 'self'}`);
      const other = await strayTgtd(runDir, owner);
      const tgtd = new Tgtd({ runDir, portal: { host: '127.0.0.1', port: await freePort() } });
      await assert.rejects(tgtd.start(), (e: unknown) => e instanceof ConflictError && message.test(e.message), what);
      assert.equal(tgtd.state, 'FAILED');
      assert.ok(await isAlive(other), `${what}: the other tgtd was killed`);
      process.kill(other.pid, 'SIGKILL');
    }
  });

  it('a portal in use fails the start loudly and leaves no tgtd', async () => {
    const runDir = join(dir, 'busy');
    const port = await freePort();
    const blocker = await listen(port);
    try {
      const tgtd = new Tgtd({ runDir, portal: { host: '127.0.0.1', port } });
      await assert.rejects(tgtd.start(), (e: unknown) => e instanceof UnavailableError && e.message.includes(`could not listen on 127.0.0.1:${port}`));
      assert.equal(tgtd.state, 'FAILED');
      for (const left of await findTgtd(join(runDir, 'tgtd'), 0, TGTD_OWNER_ENV)) assert.equal(await isAlive(left.tag), false, `tgtd ${left.tag.pid} was left running`);
    } finally {
      blocker.close();
    }
  });

  it('a missing tgtd binary fails loudly, naming the package', async () => {
    const tgtd = new Tgtd({ runDir: join(dir, 'missing'), portal: { host: '127.0.0.1', port: await freePort() }, tgtdCommand: '/nonexistent/tgtd' });
    await assert.rejects(tgtd.start(), (e: unknown) => e instanceof UnavailableError && /apt-get install tgt/.test(e.message));
  });

  it('stops tgtd (which ignores SIGTERM) with its targets, and starts again on the same socket', async () => {
    const runDir = join(dir, 'stop');
    const tgtd = new Tgtd({ runDir, portal: { host: '127.0.0.1', port: await freePort() } });
    await tgtd.start();
    await tgtd.admin.newTarget(1, 'iqn.2026-01.test.prestage:stop');
    const tag = await tagOf(tgtd.pid!);
    assert.ok(tag);
    process.kill(tag.pid, 'SIGTERM'); // ignored by tgtd
    await tgtd.stop();
    assert.equal(tgtd.state, 'STOPPED');
    assert.equal(await isAlive(tag), false);
    await tgtd.stop(); // again: nothing to do
    await tgtd.start();
    assert.deepEqual(await tgtd.admin.targets(), []);
    await tgtd.stop();
  });

  it('restarts a dead tgtd with backoff until its portal is free again', async () => {
    const port = await freePort();
    const tgtd = new Tgtd({ runDir: join(dir, 'restart'), portal: { host: '127.0.0.1', port }, restartDelayMs: 300, maxRestartDelayMs: 1000 });
    const starts: boolean[] = [];
    tgtd.onStarted((e) => starts.push(e.restart));
    await tgtd.start();
    try {
      const first = tgtd.pid!;
      process.kill(first, 'SIGKILL');
      // Take the portal while tgtd is down: its restarts fail until it is given back.
      const blocker = await waitFor('the portal to be free', () => listen(port).catch(() => undefined), 5_000, 5);
      await waitFor('a failed restart', () => Promise.resolve(/could not listen/.test(tgtd.status().lastError ?? '')), 20_000);
      assert.equal(tgtd.state, 'RESTARTING');
      await assert.rejects(tgtd.whenRunning(1), UnavailableError);
      await new Promise((r) => blocker.close(r));
      await tgtd.whenRunning(30_000);
      assert.equal(tgtd.status().restarts, 1);
      assert.notEqual(tgtd.pid, first);
      assert.deepEqual(starts, [false, true]);
      assert.deepEqual(await tgtd.admin.portals(), [`127.0.0.1:${port}`]);
    } finally {
      await tgtd.stop();
    }
  });
});
