/**
 * PostgreSQL for the benches that run `prestage serve --db`: a fresh schema per set-up, dropped
 * at cleanup, and the backends serving a given server process (to tell its share of the CPU).
 */
import { randomBytes } from 'node:crypto';
import { readFile, readdir, readlink } from 'node:fs/promises';
import pg from 'pg';
import { onCleanup } from './cleanup.js';
import { log } from './log.js';

/** $PRESTAGE_BENCH_PG, else the test database (127.0.0.1:5432, trust auth, database `test`). */
export const BENCH_PG_URL = process.env.PRESTAGE_BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432/test';

async function withClient<T>(url: string, f: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await f(c);
  } finally {
    await c.end();
  }
}

export interface Schema {
  readonly url: string;
  readonly name: string;
  /** Drops it (once; cleanup does it too). */
  drop(): Promise<void>;
}

/**
 * A schema name of our own, not yet made (`prestage serve` makes it), dropped at cleanup.
 * Register it before starting the servers on it: cleanup runs last registered first, so the
 * servers are stopped before the schema goes. Fails at once, saying so, when PostgreSQL is not
 * there.
 */
export async function freshSchema(prefix: string, url = BENCH_PG_URL): Promise<Schema> {
  try {
    await withClient(url, (c) => c.query('SELECT 1'));
  } catch (e) {
    throw new Error(`PostgreSQL is needed at ${url} ($PRESTAGE_BENCH_PG): ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  const name = `${prefix}_${randomBytes(5).toString('hex')}`;
  let dropped: Promise<void> | undefined;
  const drop = () =>
    (dropped ??= withClient(url, async (c) => {
      await c.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
    }).then(() => log(`dropped schema ${name}`)));
  onCleanup(`drop schema ${name}`, drop);
  return { url, name, drop };
}

/** Socket inodes a process holds open. */
async function socketInodes(pid: number): Promise<Set<string>> {
  const inodes = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m) inodes.add(m[1]!);
  }
  return inodes;
}

/** Local ports of the process's TCP connections to `remotePort` (from /proc/PID/net/tcp{,6}). */
async function clientPorts(pid: number, remotePort: number): Promise<number[]> {
  const inodes = await socketInodes(pid);
  const ports: number[] = [];
  for (const table of ['tcp', 'tcp6']) {
    const text = await readFile(`/proc/${pid}/net/${table}`, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const local = parseInt(f[1]!.split(':')[1]!, 16);
      const remote = parseInt(f[2]!.split(':')[1]!, 16);
      if (remote === remotePort && inodes.has(f[9]!)) ports.push(local);
    }
  }
  return ports;
}

/**
 * The PostgreSQL backend processes serving the connections of these (local) processes, found
 * through their client ports in pg_stat_activity; empty when that cannot be told (Linux only).
 */
export async function backendPids(pids: readonly number[], url = BENCH_PG_URL): Promise<number[]> {
  const port = Number(new URL(url).port || 5432);
  const ports = (await Promise.all(pids.map((p) => clientPorts(p, port)))).flat();
  if (ports.length === 0) return [];
  try {
    return await withClient(url, async (c) => {
      const r = await c.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])', [ports]);
      return r.rows.map((row) => row.pid);
    });
  } catch {
    return [];
  }
}
