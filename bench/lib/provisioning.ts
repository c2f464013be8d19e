/**
 * Provisions through the HTTP API of a `prestage serve`, as the provision and RBD benches time
 * them: hosts, pools, one provision and its release, and the warm phase (provisions each with a
 * spare ready, in batches of the pool's size).
 */
import { errorMessage, type Api, type Reply } from './http.js';
import { log, sleep } from './log.js';
import { describe } from './stats.js';

export interface Size {
  /** Used in image names and the JSON keys of the full run. */
  readonly label: string;
  readonly mib: number;
  /** Pool min/max during the warm phase, and so the batch measured between refills. */
  readonly pool: number;
}

export interface PoolView {
  readonly ready: number;
  readonly making: number;
  readonly mapped: number;
}

export interface Provision {
  readonly outcome: string;
  readonly copyId: string;
  /** The server's own time for it, without HTTP. */
  readonly waitMs: number;
}

/** Latencies of the provisions that met the expectation, and why the others did not. */
export interface Measured {
  readonly samples: number[];
  readonly failures: string[];
}

/** Outcome of one timed provision: its latency (and the server's own part) when it met the expectation, else why not. */
export type Timed = { ok: true; ms: number; serverMs: number } | { ok: false; ms: number; why: string };

/** Sends one JSON request and reads its reply: `Api.request`, or a raw client's. */
export type Requester = <T>(method: string, path: string, body?: unknown) => Promise<Reply<T>>;

export async function provision(api: Api | Requester, host: string, source: string, expect: 'warm' | 'cold'): Promise<{ timed: Timed; mapped: boolean }> {
  const send: Requester = typeof api === 'function' ? api : (m, p, b) => api.request(m, p, b);
  const r: Reply<Provision> = await send<Provision>('POST', `/v1/hosts/${host}/provision`, { source });
  if (r.status !== 200) return { timed: { ok: false, ms: r.ms, why: `HTTP ${r.status} ${errorMessage(r)}` }, mapped: false };
  if (r.body.outcome !== expect) return { timed: { ok: false, ms: r.ms, why: `outcome '${r.body.outcome}', expected '${expect}'` }, mapped: true };
  return { timed: { ok: true, ms: r.ms, serverMs: r.body.waitMs }, mapped: true };
}

export const release = (api: Api, host: string) => api.call('POST', `/v1/hosts/${host}/release`);

export async function addHosts(api: Api, prefix: string, n: number): Promise<string[]> {
  const ids = Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
  for (let i = 0; i < ids.length; i += 50) await Promise.all(ids.slice(i, i + 50).map((id) => api.call('POST', '/v1/hosts', { id })));
  return ids;
}

export const getPool = (api: Api, source: string) => api.call<PoolView>('GET', `/v1/pools/${source}`);

/** Polls the pool until `done` holds; a progress line every `reportMs` when asked. */
export async function waitPool(api: Api, source: string, done: (p: PoolView) => boolean, reportMs?: number): Promise<number> {
  const t0 = performance.now();
  let lastReport = t0;
  for (;;) {
    const p = await getPool(api, source);
    if (done(p)) return performance.now() - t0;
    if (reportMs !== undefined && performance.now() - lastReport >= reportMs) {
      lastReport = performance.now();
      log(`  pool ${source}: ${p.ready} ready, ${p.making} making, ${p.mapped} mapped (${((lastReport - t0) / 1000).toFixed(0)} s)`);
    }
    await sleep(100);
  }
}

/** Until no copy is being made anywhere (on demand or for a pool). */
export async function waitNoCopies(api: Api): Promise<void> {
  while ((await api.call<unknown[]>('GET', '/v1/copies?state=making')).length > 0) await sleep(100);
}

/** `n` warm provisions in batches of the pool's size, each batch started with the pool full. */
export async function warmPhase(api: Api, source: string, size: Size, n: number): Promise<Measured> {
  await api.call('PUT', `/v1/pools/${source}`, { min: size.pool, max: size.pool });
  const hosts = await addHosts(api, `warm-${size.label}`, size.pool);
  const samples: number[] = [];
  const serverMs: number[] = [];
  const failures: string[] = [];
  for (let done = 0, batchNo = 1; done < n; batchNo++) {
    const batch = Math.min(size.pool, n - done);
    const waited = await waitPool(api, source, (p) => p.ready >= batch, 30_000);
    const mapped: string[] = [];
    const batchMs: number[] = [];
    for (const host of hosts.slice(0, batch)) {
      const r = await provision(api, host, source, 'warm');
      if (r.mapped) mapped.push(host);
      if (r.timed.ok) {
        samples.push(r.timed.ms);
        batchMs.push(r.timed.ms);
        serverMs.push(r.timed.serverMs);
      } else {
        failures.push(`${host}: ${r.timed.why}`);
      }
    }
    for (const host of mapped) await release(api, host);
    done += batch;
    log(`warm ${size.label} batch ${batchNo}: ${describe(batchMs)} after ${(waited / 1000).toFixed(1)} s of refill; ${done}/${n}`);
  }
  log(`warm ${size.label}: server's own time (waitMs): ${describe(serverMs)}`);
  return { samples, failures };
}
