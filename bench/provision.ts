/**
 * Provisioning latency through the real HTTP API of a real `prestage serve` (file driver on this
 * machine's disk, so every copy is a real byte copy):
 *
 *   warm   N provisions of a small and a large image, each with a spare ready
 *   cold   provisions of the large image with its pool emptied (an on-demand copy each)
 *   burst  many provisions of the small image from concurrent clients, pool filled beforehand
 *          (each client a raw keep-alive HTTP/1.1 socket, see RawClient; `--client node` for node:http)
 *
 * Progress goes to stderr; the summary to stdout, its last line one JSON object.
 */
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { mkdir, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { cleanup, cleanupOnSignals, interrupted } from './lib/cleanup.js';
import type { Api, Reply } from './lib/http.js';
import { log } from './lib/log.js';
import { addHosts, getPool, provision, release, waitNoCopies, waitPool, warmPhase, type Measured, type Requester, type Size } from './lib/provisioning.js';
import { BENCH_DATA, startServer, workDir, writeRandomFile, type Server } from './lib/server.js';
import { describe, percentile, round2 } from './lib/stats.js';
import { UsageError } from './lib/usage.js';

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

/**
 * The burst's client: HTTP/1.1 over a keep-alive socket of its own, one request at a time, with
 * the request written and the reply read by hand. Node's HTTP client cost the bench about as much
 * CPU per request as the server's own work on a provision (measured here: 0.1-0.3 ms), taken
 * from the same two CPUs the server runs on; this one costs a fraction of that. The server sees
 * the same requests on the same kind of connection, and a reply is timed as `Api.request` times
 * it: from sending the request to the last byte of the reply.
 */
class RawClient {
  private buffered: Buffer = Buffer.alloc(0);
  private waiting: { resolve: (r: { status: number; body: Buffer }) => void; reject: (e: Error) => void } | undefined;
  private failed: Error | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly headers: string,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
      this.parse();
    });
    const fail = (e: Error) => {
      this.failed ??= e;
      this.waiting?.reject(e);
      this.waiting = undefined;
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('the server closed the connection')));
  }

  static open(api: Api): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: api.host, port: api.port }, () => {
        socket.off('error', reject);
        const auth = api.token === undefined ? '' : `authorization: Bearer ${api.token}\r\n`;
        resolve(new RawClient(socket, `host: ${api.host}:${api.port}\r\n${auth}connection: keep-alive\r\n`));
      });
      socket.once('error', reject);
    });
  }

  readonly request: Requester = <T>(method: string, path: string, body?: unknown): Promise<Reply<T>> => {
    if (this.failed) return Promise.reject(this.failed);
    if (this.waiting) return Promise.reject(new Error('one request at a time on a RawClient'));
    const payload = body === undefined ? '' : JSON.stringify(body);
    const head = `${method} ${path} HTTP/1.1\r\n${this.headers}${payload === '' ? '' : `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(payload)}\r\n`}\r\n`;
    const t0 = performance.now();
    return new Promise<Reply<T>>((resolve, reject) => {
      this.waiting = {
        resolve: ({ status, body: raw }) => {
          const ms = performance.now() - t0;
          const text = raw.toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = text === '' ? null : JSON.parse(text);
          } catch {
            // not JSON: keep the text
          }
          resolve({ status, body: parsed as T, ms });
        },
        reject,
      };
      this.socket.write(head + payload);
    });
  };

  /** A whole reply in the buffer (status line, headers, a body of content-length bytes) goes to the request waiting. */
  private parse(): void {
    const end = this.buffered.indexOf('\r\n\r\n');
    if (end < 0 || !this.waiting) return;
    const head = this.buffered.toString('latin1', 0, end);
    const status = Number(head.slice(9, 12));
    const length = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (!length || /\r\ntransfer-encoding:/i.test(head)) {
      this.socket.destroy(new Error(`a reply without a content-length: ${head.split('\r\n')[0]}`));
      return;
    }
    const total = end + 4 + Number(length[1]);
    if (this.buffered.length < total) return;
    const body = this.buffered.subarray(end + 4, total);
    this.buffered = this.buffered.subarray(total);
    const w = this.waiting;
    this.waiting = undefined;
    w.resolve({ status, body });
  }

  close(): void {
    this.socket.destroy();
  }
}

/** `total` provisions from `clients` concurrent clients, each looping over its own hosts. */
async function burstPhase(server: Server, source: string, total: number, clients: number, client: 'raw' | 'node'): Promise<NonNullable<Results['burst']>> {
  const { api } = server;
  const hosts = await addHosts(api, 'burst', total);
  const { ready } = await getPool(api, source);
  await api.call('PUT', `/v1/pools/${source}`, { min: total, max: total });
  log(`burst: filling pool ${source} to ${total} spares (${ready} ready now)`);
  const fillMs = await waitPool(api, source, (p) => p.ready >= total, 10_000);
  log(`burst: pool full after ${(fillMs / 1000).toFixed(0)} s`);
  await waitNoCopies(api);
  // Open every client's keep-alive connection first: the burst measures provisions, not TCP handshakes.
  const raw = client === 'raw' ? await Promise.all(Array.from({ length: clients }, () => RawClient.open(api))) : [];
  for (const r of raw) if ((await r.request('GET', '/healthz')).status !== 200) throw new Error('GET /healthz failed');
  if (client === 'node') await Promise.all(Array.from({ length: clients }, () => api.call('GET', '/healthz')));

  const samples: number[] = [];
  const failures: string[] = [];
  const cpu0 = server.cpuMs();
  const client0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let i = c; i < total; i += clients) {
        const r = await provision(raw[c]?.request ?? api, hosts[i]!, source, 'warm');
        samples.push(r.timed.ms);
        if (!r.timed.ok) failures.push(`${hosts[i]}: ${r.timed.why}`);
      }
    }),
  );
  const wallMs = performance.now() - t0;
  for (const r of raw) r.close();
  // Where the wall time went: a server main thread busy all along is CPU-bound; much less means
  // it waited (I/O, or CPUs taken by other processes).
  const cpu1 = server.cpuMs();
  const clientCpu = process.cpuUsage(client0);
  const clientKind = client;
  if (cpu0 && cpu1) {
    const main = cpu1.main - cpu0.main;
    log(
      `burst: server main thread CPU ${main} ms over ${wallMs.toFixed(0)} ms wall (${(main / total).toFixed(2)} ms per provision), ` +
        `whole server ${cpu1.all - cpu0.all} ms, bench client (${clientKind}) ${((clientCpu.user + clientCpu.system) / 1000).toFixed(0)} ms`,
    );
  }
  return { samples, failures, wallMs, perS: (total / wallMs) * 1000 };
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
      // The burst's client: raw (see RawClient), or node (node:http, as the other phases use).
      client: { type: 'string', default: 'raw' },
    },
    strict: true,
  });
  const plan = values.quick ? QUICK : FULL;
  const phases = new Set(values.phases.split(',').map((s) => s.trim()));
  for (const p of phases) if (!(PHASES as readonly string[]).includes(p)) throw new UsageError(`--phases: unknown phase '${p}' (use ${PHASES.join(', ')})`);
  const has = (p: Phase) => phases.has(p);
  const client = values.client;
  if (client !== 'raw' && client !== 'node') throw new UsageError(`--client: '${client}' (use raw or node)`);

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
      r.burst = await burstPhase(server, smallImage, plan.burst, plan.clients, client);
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
