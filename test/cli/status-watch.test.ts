/**
 * `prestage status` on one screen of 80 columns whatever the server holds, and `--watch` on
 * `status`, `pool list` and `copies`: rounds drawn over each other on a terminal, one after the
 * other into a pipe, until Ctrl-C, which exits 0.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { Pool, Status } from '../../src/api/types.js';
import { renderStatus } from '../../src/cli/commands/status.js';
import { runCli } from '../../src/cli/main.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { waitFor } from '../helpers/files.js';
import { BIN } from '../helpers/server.js';

const GiB = 2 ** 30;
const LONG = 'ubuntu-24.04-server-cloudimg-amd64-with-cuda-12-and-the-kitchen-sink';

function pool(source: string, i: number): Pool {
  return {
    source,
    policy: i % 2 === 0 ? { kind: 'predictive', min: 0, max: 1000, fillRate: 0.999 } : { kind: 'cost', min: 2, max: 500, missCostSpareHours: 2 },
    prewarm: ['300@09:00/mon-fri'],
    image: `${source}@${i + 1}`,
    target: 1000 + i,
    plan: null,
    ready: 999 + i,
    making: 12,
    mapped: 123_456,
    shortage: i === 1 ? { kind: 'space', neededBytes: 4 * GiB, freeBytes: GiB, marginBytes: GiB, since: new Date(0).toISOString() } : null,
    createdAt: new Date(0).toISOString(),
  };
}

/** A big installation with long names everywhere. */
function bigStatus(): Status {
  const pools = Array.from({ length: 40 }, (_, i) => pool(`${LONG}-${i}@${i + 1}`, i));
  return {
    version: '0.1.0',
    dataDir: `/srv/${'very-long-directory-name/'.repeat(6)}prestage`,
    driver: 'file, rbd',
    exporter: 'nbd 192.168.100.200:10809 (TLS X.509) and then some more words that do not fit',
    replenisher: 'running',
    problems: Array.from({ length: 5 }, (_, i) => ({
      kind: 'space' as const,
      source: pools[i]!.source,
      message: `${pools[i]!.source}: short of space: a copy needs 4.0 GiB, 1.0 GiB free, 1.0 GiB kept free`,
      neededBytes: 4 * GiB,
      freeBytes: GiB,
      marginBytes: GiB,
      since: new Date(0).toISOString(),
    })),
    images: 12_345,
    hosts: 987_654,
    mapped: 876_543,
    waitingProvisions: 4321,
    copiesInFlight: Array.from({ length: 9 }, (_, i) => ({ copyId: `c-${'0123456789abcdef'.repeat(2)}${i}`, imageId: `img-${i}`, pool: pools[i]!.source, doneBytes: i * 256 * 2 ** 20, totalBytes: 8 * GiB })),
    pools,
    instances: Array.from({ length: 7 }, (_, i) => ({
      id: `inst-${i}`,
      name: `prestage-instance-on-a-host-with-a-long-fqdn-${i}.example.internal:12345`,
      live: i !== 2,
      self: i === 0,
      heartbeatAt: new Date(10_000).toISOString(),
      pools: pools.slice(i * 5, i * 5 + 5).map((p) => p.source),
    })),
    iscsi: {
      portal: '192.168.100.200:3260',
      tgtd: 'RUNNING',
      restarts: 2,
      exported: 50,
      sessions: Array.from({ length: 6 }, (_, i) => ({ hostId: `${LONG}-host-${i}`, initiator: `iqn.2026-12.io.prestage.initiators:${LONG}-host-${i}`, address: `192.168.100.${10 + i}` })),
    },
  };
}

describe('prestage status on one screen', () => {
  it('fits 80 columns and 24 lines with many pools, instances and long names, and says what it left out', () => {
    const text = renderStatus(bigStatus(), { server: `https://${'prestage.'.repeat(8)}example.com:7480`, width: 80, height: 23, now: 12_500 });
    const lines = text.trimEnd().split('\n');
    for (const l of lines) assert.ok(l.length <= 80, `${l.length} columns: ${l}`);
    assert.ok(lines.length <= 24, `${lines.length} lines:\n${text}`);
    assert.match(lines[0]!, /^degraded: 5 problems · prestage 0\.1\.0 at https:\/\//);
    assert.match(text, /^data …[^\n]*\/prestage$/m, 'a long path keeps its end');
    assert.match(text, /^! and 4 more problems \(prestage status --json\)$/m);
    assert.match(text, /^iscsi 192\.168\.100\.200:3260 · tgtd RUNNING \(2 restarts\) · 50 targets · 6 sessions$/m);
    assert.doesNotMatch(text, /ISCSI SESSION/, 'no room for the sessions: their count says it');
    // With room, the sessions are listed, a few of them.
    const tall = renderStatus(bigStatus(), { server: 'http://127.0.0.1:7480', width: 80, height: 40, now: 12_500 });
    assert.match(tall, /^ISCSI SESSION +INITIATOR +FROM/m);
    assert.match(tall, /^… and 4 more sessions \(prestage status --json\)$/m);
    assert.ok(tall.trimEnd().split('\n').length <= 41);
    assert.match(text, /… and \d+ more pools \(prestage pool list\)/);
    assert.match(text, /… and \d+ more in flight/);
    assert.match(text, /… and \d+ more instances/);
    // Cut in the middle: the start and the version at the end both stay.
    const poolRow = lines.find((l) => l.startsWith('ubuntu-24.'));
    assert.match(poolRow ?? '', /^ubuntu-24\.\S*…\S*-0@1 +999 +1000 +12 +123456 +predictive 99\.9 % 0\.\.1000$/);
    assert.match(text, /^\S+-1@2 ! /m, 'a pool short of space is marked');
    assert.match(text, /^prestage-instance\S*…\S* \* +live +2\.5 s ago +5: /m);
  });

  it('a small installation shows everything', () => {
    const s = bigStatus();
    const small: Status = { ...s, problems: [], pools: s.pools.slice(0, 2), copiesInFlight: [], instances: s.instances.slice(0, 1), iscsi: { ...s.iscsi!, sessions: s.iscsi!.sessions.slice(0, 2) } };
    const text = renderStatus(small, { server: 'http://127.0.0.1:7480', width: 80, height: 23, now: 12_500 });
    assert.doesNotMatch(text, /more|COPY IN FLIGHT/);
    assert.match(text, /^ok · prestage 0\.1\.0 at http:\/\/127\.0\.0\.1:7480$/m);
    assert.equal(text.split('\n').filter((l) => l.startsWith('ubuntu') && !l.includes('iqn.')).length, 2);
    assert.equal(text.split('\n').filter((l) => l.includes('iqn.')).length, 2, 'both sessions');
  });
});

describe('--watch', () => {
  let t: TestApp;
  before(async () => {
    t = await startTestApp({ listen: '127.0.0.1:0' }, { listen: true });
  });
  after(() => t.close());

  /** Runs the CLI in this process on a fake terminal (or pipe) until `rounds` rounds were written, then "presses Ctrl-C". */
  async function watchRounds(args: readonly string[], tty: boolean, rounds: (out: string) => boolean): Promise<{ code: number; out: string }> {
    const stdout = Object.assign(new PassThrough(), tty ? { isTTY: true, columns: 100, rows: 30 } : {});
    let out = '';
    stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    const interrupt = new AbortController();
    const env = { PRESTAGE_URL: `http://${t.app.address}`, PRESTAGE_TOKEN: t.token };
    const running = runCli(args, { stdout, stderr: new PassThrough(), env, cwd: process.cwd(), interrupt: interrupt.signal });
    await waitFor(`rounds of ${args.join(' ')}`, () => Promise.resolve(rounds(out)));
    interrupt.abort();
    return { code: await running, out };
  }

  it('pool list and copies: into a pipe, one round after another, a blank line apart', async () => {
    assert.equal((await t.call('POST', '/v1/hosts', { id: 'w1' })).status, 201);
    const pools = await watchRounds(['pool', 'list', '--watch', '0.1'], false, (o) => o.split('no pools').length > 3);
    assert.equal(pools.code, 0);
    assert.match(pools.out, /^no pools \(make one[^\n]*\n\nno pools/);
    assert.ok(!pools.out.includes('\x1b'), 'no terminal codes into a pipe');
    const copies = await watchRounds(['copies', '--watch', '0.1', '--state', 'ready'], false, (o) => o.split('no copies ready').length > 2);
    assert.equal(copies.code, 0);
  });

  it('status on a terminal: each round drawn over the last, the cursor given back at the end', async () => {
    const r = await watchRounds(['status', '--watch', '0.1'], true, (o) => o.split('\x1b[H').length > 3);
    assert.equal(r.code, 0);
    assert.ok(r.out.startsWith('\x1b[?25l\x1b[2J\x1b[H'), JSON.stringify(r.out.slice(0, 40)));
    assert.match(r.out, /every 0\.1 s · \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ · Ctrl-C stops/);
    assert.ok(r.out.includes('Ctrl-C stops\x1b[K\n\x1b[K\nok · prestage '), 'each line cleared to its end as it is drawn');
    assert.ok(r.out.endsWith('\x1b[?25h\n'));
  });

  it('Ctrl-C (SIGINT) ends `prestage status --watch` with exit code 0', async () => {
    const child = spawn(process.execPath, [BIN, 'status', '--watch', '0.1'], {
      env: { ...process.env, PRESTAGE_URL: `http://${t.app.address}`, PRESTAGE_TOKEN: t.token },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    await waitFor('two rounds', () => Promise.resolve(out.split('replenisher ').length > 2 || child.exitCode !== null));
    const exited = once(child, 'exit');
    child.kill('SIGINT');
    const [code] = (await exited) as [number | null];
    assert.equal(code, 0, err);
    for (const l of out.split('\n')) assert.ok(l.length <= 80, l);
  });
});
