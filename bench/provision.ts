/**
 * Provisioning latency through the real HTTP API of a real `prestage serve` (file driver on this
 * machine's disk, so every copy is a real byte copy):
 *
 *   warm   N provisions of a small and a large image, each with a spare ready
 *   cold   provisions of the large image with its pool emptied (an on-demand copy each)
 *   burst  many provisions of the small image from concurrent clients, pool filled beforehand
 *
 * Progress goes to stderr; the summary to stdout, its last line one JSON object.
 */
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { mkdir, rm } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { cleanup, cleanupOnSignals, interrupted } from './lib/cleanup.js';
import { errorMessage, type Api, type Reply } from './lib/http.js';
import { log, sleep } from './lib/log.js';
import { BENCH_DATA, startServer, workDir, writeRandomFile, type Server } from './lib/server.js';
import { describe, percentile, round2 } from './lib/stats.js';
import { UsageError } from './lib/usage.js';

interface Size {
  /** Used in image names and the JSON keys of the full run. */
  readonly label: string;
  readonly mib: number;
  /** Pool min/max during the warm phase, and so the batch measured between refills. */
  readonly pool: number;
}

interface Plan {
  readonly small: Size;
  readonly large: Size;
  readonly warm: number;
  readonly cold: number;
  readonly burst: number;
  readonly clients: number;
}

const FULL: Plan = { small: { label: '64m', mib: 64, pool: 25 }, large: { label: '1g', mib: 1024, pool: 20 }, warm: 200, cold: 5, burst: 500, clients: 50 };
const QUICK: Plan = { small: { label: '16m', mib: 16, pool: 10 }, large: { label: '128m', mib: 128, pool: 10 }, warm: 50, cold: 2, burst: 200, clients: 20 };
const PHASES = ['warm', 'cold', 'burst'] as const;
type Phase = (typeof PHASES)[number];

const TARGET = { warmP99Ms: 10, sizeRatio: 1.5, coldWarmRatio: 100, burstPerS: 2000 };

interface PoolView {
  readonly ready: number;
  readonly making: number;
  readonly mapped: number;
}

interface Provision {
  readonly outcome: string;
  readonly copyId: string;
  /** The server's own time for it, without HTTP. */
  readonly waitMs: number;
}

/** Outcome of one timed provision: its latency (and the server's own part) when it met the expectation, else why not. */
type Timed = { ok: true; ms: number; serverMs: number } | { ok: false; ms: number; why: string };

async function provision(api: Api, host: string, source: string, expect: 'warm' | 'cold'): Promise<{ timed: Timed; mapped: boolean }> {
  const r: Reply<Provision> = await api.request<Provision>('POST', `/v1/hosts/${host}/provision`, { source });
  if (r.status !== 200) return { timed: { ok: false, ms: r.ms, why: `HTTP ${r.status} ${errorMessage(r)}` }, mapped: false };
  if (r.body.outcome !== expect) return { timed: { ok: false, ms: r.ms, why: `outcome '${r.body.outcome}', expected '${expect}'` }, mapped: true };
  return { timed: { ok: true, ms: r.ms, serverMs: r.body.waitMs }, mapped: true };
}

const release = (api: Api, host: string) => api.call('POST', `/v1/hosts/${host}/release`);

async function addHosts(api: Api, prefix: string, n: number): Promise<string[]> {
  const ids = Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
  for (let i = 0; i < ids.length; i += 50) await Promise.all(ids.slice(i, i + 50).map((id) => api.call('POST', '/v1/hosts', { id })));
  return ids;
}

const getPool = (api: Api, source: string) => api.call<PoolView>('GET', `/v1/pools/${source}`);

/** Polls the pool until `done` holds; a progress line every `reportMs` when asked. */
async function waitPool(api: Api, source: string, done: (p: PoolView) => boolean, reportMs?: number): Promise<number> {
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
async function waitNoCopies(api: Api): Promise<void> {
  while ((await api.call<unknown[]>('GET', '/v1/copies?state=making')).length > 0) await sleep(100);
}

async function importImage(api: Api, dir: string, size: Size): Promise<string> {
  const name = `bench-${size.label}`;
  const file = join(dir, `${name}.raw`);
  const t0 = performance.now();
  await writeRandomFile(file, size.mib);
  const t1 = performance.now();
  await api.call('POST', '/v1/images', { name, path: file });
  log(`image ${name}: ${size.mib} MiB written in ${((t1 - t0) / 1000).toFixed(1)} s, imported in ${((performance.now() - t1) / 1000).toFixed(1)} s`);
  await rm(file);
  return name;
}

/** `n` warm provisions in batches of the pool's size, each batch started with the pool full. */
async function warmPhase(api: Api, source: string, size: Size, n: number): Promise<Measured> {
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

/** Pool min 0, its spares used up (provisioned and released), then `n` cold provisions. */
async function coldPhase(api: Api, source: string, size: Size, n: number): Promise<Measured> {
  await api.call('PUT', `/v1/pools/${source}`, { min: 0, max: size.pool });
  const drainHosts = await addHosts(api, `drain-${size.label}`, size.pool);
  const [host] = await addHosts(api, `cold-${size.label}`, 1);
  for (;;) {
    await waitNoCopies(api);
    const { ready } = await getPool(api, source);
    if (ready === 0) break;
    log(`cold ${size.label}: using up ${ready} spares`);
    const used = drainHosts.slice(0, ready);
    for (const h of used) await api.call('POST', `/v1/hosts/${h}/provision`, { source });
    for (const h of used) await release(api, h);
  }
  const samples: number[] = [];
  const failures: string[] = [];
  for (let i = 0; i < n; i++) {
    await waitNoCopies(api);
    await waitPool(api, source, (p) => p.ready === 0 && p.making === 0);
    const r = await provision(api, host!, source, 'cold');
    if (r.timed.ok) samples.push(r.timed.ms);
    else failures.push(`${host}: ${r.timed.why}`);
    if (r.mapped) await release(api, host!);
    log(`cold ${size.label} ${i + 1}/${n}: ${r.timed.ms.toFixed(0)} ms${r.timed.ok ? '' : ` FAILED: ${r.timed.why}`}`);
  }
  return { samples, failures };
}

/** `total` provisions from `clients` concurrent clients, each looping over its own hosts. */
async function burstPhase(server: Server, source: string, total: number, clients: number): Promise<NonNullable<Results['burst']>> {
  const { api } = server;
  const hosts = await addHosts(api, 'burst', total);
  const { ready } = await getPool(api, source);
  await api.call('PUT', `/v1/pools/${source}`, { min: total, max: total });
  log(`burst: filling pool ${source} to ${total} spares (${ready} ready now)`);
  const fillMs = await waitPool(api, source, (p) => p.ready >= total, 10_000);
  log(`burst: pool full after ${(fillMs / 1000).toFixed(0)} s`);
  await waitNoCopies(api);
  // Open every client's keep-alive connection first: the burst measures provisions, not TCP handshakes.
  await Promise.all(Array.from({ length: clients }, () => api.call('GET', '/healthz')));

  const samples: number[] = [];
  const failures: string[] = [];
  const cpu0 = server.cpuMs();
  const client0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let i = c; i < total; i += clients) {
        const r = await provision(api, hosts[i]!, source, 'warm');
        samples.push(r.timed.ms);
        if (!r.timed.ok) failures.push(`${hosts[i]}: ${r.timed.why}`);
      }
    }),
  );
  const wallMs = performance.now() - t0;
  // Where the wall time went: a server main thread busy all along is CPU-bound; much less means
  // it waited (I/O, or CPUs taken by other processes).
  const cpu1 = server.cpuMs();
  const client = process.cpuUsage(client0);
  if (cpu0 && cpu1) {
    const main = cpu1.main - cpu0.main;
    log(
      `burst: server main thread CPU ${main} ms over ${wallMs.toFixed(0)} ms wall (${(main / total).toFixed(2)} ms per provision), ` +
        `whole server ${cpu1.all - cpu0.all} ms, bench client ${((client.user + client.system) / 1000).toFixed(0)} ms`,
    );
  }
  return { samples, failures, wallMs, perS: (total / wallMs) * 1000 };
}

interface Measured {
  readonly samples: number[];
  readonly failures: string[];
}

interface Results {
  warmSmall?: Measured;
  warmLarge?: Measured;
  cold?: Measured;
  burst?: Measured & { readonly perS: number; readonly wallMs: number };
}

/** Human lines, targets, then the JSON line (last on stdout). */
function report(plan: Plan, r: Results, title: string): void {
  const { small, large } = plan;
  const p50 = (m: Measured | undefined) => (m && m.samples.length > 0 ? percentile(m.samples, 0.5) : undefined);
  const warm: Measured | undefined =
    r.warmSmall || r.warmLarge
      ? { samples: [...(r.warmSmall?.samples ?? []), ...(r.warmLarge?.samples ?? [])], failures: [...(r.warmSmall?.failures ?? []), ...(r.warmLarge?.failures ?? [])] }
      : undefined;
  const warmP99 = warm && warm.samples.length > 0 ? percentile(warm.samples, 0.99) : undefined;
  const [warmSmallP50, warmLargeP50, coldP50] = [p50(r.warmSmall), p50(r.warmLarge), p50(r.cold)];
  const ratio = coldP50 !== undefined && warmLargeP50 !== undefined ? coldP50 / warmLargeP50 : undefined;
  const burstP99 = r.burst && r.burst.samples.length > 0 ? percentile(r.burst.samples, 0.99) : undefined;

  console.log(`\n${title}`);
  const line = (what: string, m: Measured | undefined, extra = '') => m && console.log(`${what.padEnd(10)} ${extra}${describe(m.samples)}`);
  line(`warm ${small.label}`, r.warmSmall);
  line(`warm ${large.label}`, r.warmLarge);
  line(`cold ${large.label}`, r.cold);
  line('burst', r.burst, r.burst && `${plan.burst} from ${plan.clients} clients in ${r.burst.wallMs.toFixed(0)} ms = ${r.burst.perS.toFixed(0)}/s; `);
  for (const [what, m] of [['warm', warm], ['cold', r.cold], ['burst', r.burst]] as const) {
    if (!m || m.failures.length === 0) continue;
    console.log(`${what}: ${m.failures.length} failures, first ones:`);
    for (const f of m.failures.slice(0, 5)) console.log(`  ${f}`);
  }
  const target = (measured: boolean, ok: () => boolean, text: () => string) => measured && console.log(`${ok() ? 'PASS' : 'MISS'}  ${text()}`);
  target(warmP99 !== undefined, () => warmP99! <= TARGET.warmP99Ms, () => `warm p99 ${warmP99!.toFixed(2)} ms ≤ ${TARGET.warmP99Ms} ms`);
  target(
    warmSmallP50 !== undefined && warmLargeP50 !== undefined,
    () => warmLargeP50! <= TARGET.sizeRatio * warmSmallP50!,
    () => `warm p50 ${large.label} ${warmLargeP50!.toFixed(2)} ms ≤ ${TARGET.sizeRatio} × warm p50 ${small.label} ${warmSmallP50!.toFixed(2)} ms`,
  );
  target(ratio !== undefined, () => ratio! >= TARGET.coldWarmRatio, () => `cold/warm ${large.label} ${ratio!.toFixed(1)} ≥ ${TARGET.coldWarmRatio}`);
  target(
    r.burst !== undefined,
    () => r.burst!.perS >= TARGET.burstPerS && r.burst!.failures.length === 0,
    () => `burst ${r.burst!.perS.toFixed(0)}/s ≥ ${TARGET.burstPerS}/s with ${r.burst!.failures.length} failures (0 wanted)`,
  );
  console.log(
    JSON.stringify({
      warm_p50_ms: round2(p50(warm)),
      warm_p99_ms: round2(warmP99),
      warm_p50_ms_64m: round2(warmSmallP50),
      warm_p50_ms_1g: round2(warmLargeP50),
      cold_p50_ms_1g: round2(coldP50),
      ratio_cold_warm_1g: round2(ratio),
      burst_provisions_per_s: round2(r.burst?.perS),
      burst_p99_ms: round2(burstP99),
      burst_failures: r.burst ? r.burst.failures.length : null,
      warm_failures: warm ? warm.failures.length : null,
    }),
  );
}

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      phases: { type: 'string', default: PHASES.join(',') },
      'cpu-prof': { type: 'boolean', default: false },
    },
    strict: true,
  });
  const plan = values.quick ? QUICK : FULL;
  const phases = new Set(values.phases.split(',').map((s) => s.trim()));
  for (const p of phases) if (!(PHASES as readonly string[]).includes(p)) throw new UsageError(`--phases: unknown phase '${p}' (use ${PHASES.join(', ')})`);
  const has = (p: Phase) => phases.has(p);

  cleanupOnSignals();
  const t0 = performance.now();
  // The client and server share this machine: other load on it shows up in every figure.
  const loadAtStart = loadavg()[0]!.toFixed(2);
  try {
    const dir = await workDir('provision');
    const cpuProfDir = values['cpu-prof'] ? join(BENCH_DATA, 'profiles') : undefined;
    if (cpuProfDir) await mkdir(cpuProfDir, { recursive: true });
    const server = await startServer({ dataDir: join(dir, 'data'), cpuProfDir, maxSockets: Math.max(64, plan.clients) });
    const { api } = server;
    const { small, large } = plan;
    const smallImage = has('warm') || has('burst') ? await importImage(api, dir, small) : '';
    const largeImage = has('warm') || has('cold') ? await importImage(api, dir, large) : '';

    const r: Results = {};
    if (has('warm')) {
      r.warmSmall = await warmPhase(api, smallImage, small, plan.warm);
      log(`warm ${small.label}: ${describe(r.warmSmall.samples)}`);
      r.warmLarge = await warmPhase(api, largeImage, large, plan.warm);
      log(`warm ${large.label}: ${describe(r.warmLarge.samples)}`);
    }
    if (has('cold')) {
      r.cold = await coldPhase(api, largeImage, large, plan.cold);
      log(`cold ${large.label}: ${describe(r.cold.samples)}`);
    }
    if (has('burst')) {
      r.burst = await burstPhase(server, smallImage, plan.burst, plan.clients);
      log(`burst: ${plan.burst} provisions in ${r.burst.wallMs.toFixed(0)} ms = ${r.burst.perS.toFixed(0)}/s; ${describe(r.burst.samples)}; ${r.burst.failures.length} failures`);
    }
    await server.stop();
    if (cpuProfDir) log(`server CPU profile in ${cpuProfDir}`);
    const minutes = ((performance.now() - t0) / 60_000).toFixed(1);
    const machine = `${availableParallelism()} CPUs, load average ${loadAtStart} before it started`;
    report(plan, r, `provision benchmark: ${small.label} = ${small.mib} MiB, ${large.label} = ${large.mib} MiB${values.quick ? ' (--quick)' : ''}, ${minutes} min; ${machine}`);
  } catch (e) {
    // After a signal, requests fail because the server is stopping: no news, the handler exits.
    if (!interrupted()) {
      log(`provision bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      process.exitCode = 1;
    }
  } finally {
    await cleanup();
  }
}
