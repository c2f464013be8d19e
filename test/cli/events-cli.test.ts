/**
 * `prestage events` against a real `prestage serve`: the log as lines or JSON, and `--follow`
 * through a connection that is cut and comes back: every event once, those appended while it
 * was cut included; Ctrl-C ends it with exit code 0.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import type { Event } from '../../src/api/types.js';
import { prestage } from '../helpers/cli-run.js';
import { makeTempDir, waitFor } from '../helpers/files.js';
import { Relay } from '../helpers/pg-relay.js';
import { BIN, freePort, startServe, type ServeProcess } from '../helpers/server.js';

describe('prestage events', () => {
  let server: ServeProcess;
  let dir: string;
  before(async () => {
    dir = await makeTempDir();
    server = await startServe(dir);
  });
  after(async () => {
    await server.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
  });

  const addHosts = async (prefix: string, n: number) => {
    for (let i = 0; i < n; i++) assert.equal((await server.call('POST', '/v1/hosts', { id: `${prefix}-${i}` })).status, 201);
  };
  const log = async () => (await server.call<Event[]>('GET', '/v1/events?after=0&limit=10000')).body;

  it('lists the log after --after, as lines or as JSON lines', async () => {
    await addHosts('list', 2);
    const all = await log();
    const from = all[1]!.seq;
    const json = await prestage(['events', '--after', String(from), '--json'], { env: server.env });
    assert.equal(json.code, 0, json.stderr);
    const lines = json.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Event);
    assert.deepEqual(lines, all.slice(2));
    const text = await prestage(['events', '--after', String(from)], { env: server.env });
    assert.equal(text.code, 0, text.stderr);
    const hostLine = text.stdout.split('\n').find((l) => l.includes(' host.added '));
    assert.match(hostLine ?? '', /^ +\d+ {2}\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ {2}host\.added +list-0 {2}mac=null\b/);
  });

  it('--follow resumes a cut connection where it left off: no event missed, none twice; Ctrl-C exits 0', async () => {
    const relay = new Relay({ host: '127.0.0.1', port: Number(new URL(server.url).port) }, await freePort());
    await relay.up();
    const start = (await log()).at(-1)!.seq;
    const child = spawn(process.execPath, [BIN, 'events', '--follow', '--after', String(start), '--json'], {
      env: { ...process.env, ...server.env, PRESTAGE_URL: `http://127.0.0.1:${relay.port}` },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const seqs = () => stdout.split('\n').filter((l) => l.length > 0).map((l) => (JSON.parse(l) as Event).seq);
    const printed = (seq: number) => waitFor(`the CLI to print event ${seq} (stderr: ${stderr})`, () => Promise.resolve(seqs().includes(seq)));
    try {
      await addHosts('f1', 5);
      await printed((await log()).at(-1)!.seq);
      await relay.down();
      await addHosts('f2', 5); // while the connection is cut
      await relay.up();
      await addHosts('f3', 5);
      const all = (await log()).filter((e) => e.seq > start);
      await printed(all.at(-1)!.seq);
      assert.deepEqual(seqs(), all.map((e) => e.seq), 'every event once, in order');
      assert.match(stderr, /connection lost .*connecting again after event \d+/);
    } finally {
      const exited = once(child, 'exit');
      child.kill('SIGINT');
      const [code] = (await exited) as [number | null];
      await relay.down();
      assert.equal(code, 0, `Ctrl-C ends --follow with exit code 0 (stderr: ${stderr})`);
    }
  });

  it('--follow with nothing listening fails at once, as any command does', async () => {
    const r = await prestage(['events', '--follow'], { env: { PRESTAGE_URL: `http://127.0.0.1:${await freePort()}`, PRESTAGE_TOKEN: 'x' } });
    assert.equal(r.code, 7);
    assert.match(r.stderr, /^prestage: cannot reach prestage at/);
  });
});
