/**
 * Warm provisions per second and their p99 latency through the HTTP API, from 50 concurrent
 * clients, with the state in SQLite (1 instance), in PostgreSQL (1 instance), and in PostgreSQL
 * shared by 3 instances on one data directory (the clients spread round-robin over the three
 * APIs); then a takeover: under a steady provision/release load on the 3 instances, the one
 * leading the pool is SIGKILLed and the seconds until another reports leading it are measured.
 *
 * Every provision should be warm: each round starts with the pool holding a ready spare for
 * every provision of the round (a 64 KiB image, so the fill is quick), and each round uses fresh
 * hosts. Non-warm provisions and failures are counted and printed, and so are double hand-outs:
 * a copy handed to a host while another holds it (from the 200 replies), or the mapped copies
 * disagreeing with the hosts' mappings at the end of each set-up.
 *
 * Progress goes to stderr; the summary to stdout, its last line one JSON object.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { cleanup, cleanupOnSignals, interrupted } from './lib/cleanup.js';
import { cpuSince, describeCpu, markCpu, pidsNamed, type CpuSpent } from './lib/cpu.js';
import { Api, errorMessage } from './lib/http.js';
import { log, sleep } from './lib/log.js';
import { backendPids, freshSchema, type Schema } from './lib/postgres.js';
import { nowUs, summarizeProfile, type Window } from './lib/nbd-profile.js';
import { REPO, startServer, workDir, type Server } from './lib/server.js';
import { describe, percentile, round2 } from './lib/stats.js';
import { UsageError } from './lib/usage.js';

interface Plan {
  /** Rounds per set-up, each of `perRound` provisions on fresh hosts, the pool full at its start. */
  readonly rounds: number;
  readonly perRound: number;
  readonly clients: number;
  /** Takeover: the pool's size, the clients of the steady load and its pace (provisions per second, all clients together). */
  readonly takeoverPool: number;
  readonly takeoverClients: number;
  readonly takeoverRate: number;
  /** Seconds of steady load before the kill, and after another instance took the pool over. */
  readonly loadBeforeS: number;
  readonly loadAfterS: number;
}

const FULL: Plan = { rounds: 2, perRound: 1500, clients: 50, takeoverPool: 400, takeoverClients: 10, takeoverRate: 40, loadBeforeS: 3, loadAfterS: 3 };
const QUICK: Plan = { rounds: 1, perRound: 300, clients: 50, takeoverPool: 200, takeoverClients: 10, takeoverRate: 20, loadBeforeS: 1.5, loadAfterS: 1 };

const TARGET = { sqlitePerS: 2000, pg3PerS: 1000, pg3OverPg1: 1.3, takeoverS: 10 };
const IMAGE_BYTES = 64 << 10;
const SOURCE = 'scale';

interface ProvisionReply {
  readonly copyId: string;
  readonly outcome: string;
  readonly existing: boolean;
  readonly waitMs: number;
}
interface InstanceRow {
  readonly id: string;
  readonly name: string;
  readonly pid: number;
  readonly live: boolean;
  readonly self: boolean;
  readonly pools: readonly string[];
}
interface HostRow {
  readonly id: string;
  readonly mapping?: { readonly copyId: string } | null;
}
interface CopyRow {
  readonly id: string;
  readonly hostId: string | null;
}
interface PoolView {
  readonly ready: number;
  readonly making: number;
  readonly mapped: number;
}

/**
 * Who holds which copy, from the 200 replies: a copy handed to a host while another host holds
 * it is a double hand-out. A host's copy stops counting as held once its release is sent.
 */
class Handouts {
  private readonly holder = new Map<string, string>();
  private readonly ofHost = new Map<string, string>();
  private readonly ever = new Set<string>();
  readonly doubles: string[] = [];
  /** Copies handed out again after their host released them (a released copy should be gone). */
  reissued = 0;

  handed(host: string, copyId: string): void {
    const other = this.holder.get(copyId);
    if (other !== undefined && other !== host) this.doubles.push(`copy ${copyId} handed to ${host} while ${other} holds it`);
    else if (other === undefined && this.ever.has(copyId)) this.reissued++;
    this.holder.set(copyId, host);
    this.ofHost.set(host, copyId);
    this.ever.add(copyId);
  }

  releasing(host: string): void {
    const copyId = this.ofHost.get(host);
    if (copyId === undefined) return;
    this.ofHost.delete(host);
    if (this.holder.get(copyId) === host) this.holder.delete(copyId);
  }

  /** Host → copy, for every host that holds one by the replies. */
  held(): ReadonlyMap<string, string> {
    return this.ofHost;
  }
}

/** Ways the state disagrees with itself or with the replies: mapped copies against the hosts' mappings. */
async function disagreements(api: Api, expected: ReadonlyMap<string, string>): Promise<string[]> {
  const [hosts, mapped] = await Promise.all([api.all<HostRow>('/v1/hosts'), api.all<CopyRow>('/v1/copies?state=mapped')]);
  const problems = new Set<string>();
  const hostOf = new Map<string, string>();
  for (const c of mapped) {
    if (c.hostId === null) problems.add(`mapped copy ${c.id} has no host`);
    else hostOf.set(c.id, c.hostId);
  }
  const holders = new Map<string, string[]>();
  const mappingOf = new Map<string, string>();
  for (const h of hosts) {
    const copyId = h.mapping?.copyId;
    if (copyId === undefined) continue;
    mappingOf.set(h.id, copyId);
    holders.set(copyId, [...(holders.get(copyId) ?? []), h.id]);
    if (hostOf.get(copyId) !== h.id) problems.add(`host ${h.id} maps copy ${copyId}, which is ${hostOf.has(copyId) ? `mapped to ${hostOf.get(copyId)}` : 'not mapped'}`);
  }
  for (const [copyId, hs] of holders) if (hs.length > 1) problems.add(`copy ${copyId} is mapped by ${hs.length} hosts: ${hs.join(', ')}`);
  for (const [copyId, hostId] of hostOf) if (mappingOf.get(hostId) !== copyId) problems.add(`copy ${copyId} is mapped to ${hostId}, whose mapping is ${mappingOf.get(hostId) ?? 'none'}`);
  for (const [hostId, copyId] of expected) {
    if (mappingOf.get(hostId) !== copyId) problems.add(`host ${hostId} was handed copy ${copyId} but maps ${mappingOf.get(hostId) ?? 'none'}`);
  }
  return [...problems];
}

const getPool = (api: Api, source: string) => api.call<PoolView>('GET', `/v1/pools/${source}`);

/** Polls the pool until it holds `ready` spares, with a progress line every 5 s. */
async function waitReady(api: Api, source: string, ready: number): Promise<number> {
  const t0 = performance.now();
  let lastReport = t0;
  for (;;) {
    const p = await getPool(api, source);
    if (p.ready >= ready) return performance.now() - t0;
    if (performance.now() - lastReport >= 5000) {
      lastReport = performance.now();
      log(`  pool ${source}: ${p.ready}/${ready} ready, ${p.making} making, ${p.mapped} mapped (${((lastReport - t0) / 1000).toFixed(0)} s)`);
    }
    if (performance.now() - t0 > 600_000) throw new Error(`pool ${source} did not reach ${ready} ready spares in 10 min (${p.ready} ready)`);
    await sleep(100);
  }
}

/** Adds the hosts, 50 at a time, spread over the APIs. */
async function addHosts(apis: readonly Api[], ids: readonly string[]): Promise<void> {
  for (let i = 0; i < ids.length; i += 50) {
    await Promise.all(ids.slice(i, i + 50).map((id, k) => apis[(i + k) % apis.length]!.call('POST', '/v1/hosts', { id })));
  }
}

interface Outcomes {
  /** Latency of every 200 reply. */
  readonly samples: number[];
  /** The server's own time (waitMs) of every 200 reply. */
  readonly serverMs: number[];
  nonWarm: number;
  readonly failures: string[];
}

const newOutcomes = (): Outcomes => ({ samples: [], serverMs: [], nonWarm: 0, failures: [] });

/** One provision: its reply recorded in `out` and `handouts`; true when the host now holds a copy. */
async function provision(api: Api, host: string, out: Outcomes, handouts: Handouts, nonWarmNotes?: string[]): Promise<boolean> {
  let r;
  try {
    r = await api.request<ProvisionReply>('POST', `/v1/hosts/${host}/provision`, { source: SOURCE });
  } catch (e) {
    out.failures.push(`${host} via :${api.port}: ${e instanceof Error ? e.message : String(e)}`);
    return false;
  }
  if (r.status !== 200) {
    out.failures.push(`${host} via :${api.port}: HTTP ${r.status} ${errorMessage(r)}`);
    return false;
  }
  out.samples.push(r.ms);
  out.serverMs.push(r.body.waitMs);
  handouts.handed(host, r.body.copyId);
  if (r.body.outcome !== 'warm' || r.body.existing) {
    out.nonWarm++;
    nonWarmNotes?.push(`${host}: outcome ${r.body.outcome}${r.body.existing ? ' (existing mapping)' : ''} after ${r.ms.toFixed(0)} ms`);
  }
  return true;
}

interface SetupResult {
  readonly label: string;
  readonly instances: number;
  readonly out: Outcomes;
  readonly wallMs: number;
  readonly perS: number;
  readonly nonWarmNotes: string[];
  readonly doubles: string[];
  readonly reissued: number;
  readonly cpu: CpuSpent[];
}

/** A set-up: its servers, the PostgreSQL schema if any, and what the bench knows of its hand-outs. */
interface Setup {
  readonly label: string;
  readonly servers: Server[];
  readonly apis: Api[];
  readonly schema: Schema | undefined;
  readonly handouts: Handouts;
  /** With --cpu-prof: where the servers write their profiles, and the measured stretches. */
  readonly profileDir: string | undefined;
  readonly windows: Window[];
}

interface SetupOptions {
  readonly leaseTtl: string;
  readonly copyConcurrency: number;
  readonly maxSockets: number;
  readonly cpuProf: boolean;
}

async function startSetup(label: string, dir: string, instances: number, db: boolean, o: SetupOptions): Promise<Setup> {
  const schema = db ? await freshSchema(`bench_scale_${label}`) : undefined;
  const dataDir = join(dir, `data-${label}`);
  const profileDir = o.cpuProf ? join(dir, `profiles-${label}`) : undefined;
  if (profileDir) await mkdir(profileDir, { recursive: true });
  const start = (i: number) =>
    startServer({
      dataDir,
      maxSockets: o.maxSockets,
      copyConcurrency: o.copyConcurrency,
      cpuProfDir: profileDir,
      ...(schema && { db: { url: schema.url, schema: schema.name }, instanceName: String.fromCharCode(97 + i), leaseTtl: o.leaseTtl }),
    });
  // The first instance makes the schema and writes the admin token; the others start together after it.
  const first = await start(0);
  const rest = await Promise.all(Array.from({ length: instances - 1 }, (_, i) => start(i + 1)));
  const servers = [first, ...rest];
  return { label, servers, apis: servers.map((s) => s.api), schema, handouts: new Handouts(), profileDir, windows: [] };
}

async function importImage(api: Api, dir: string): Promise<void> {
  const file = join(dir, `${SOURCE}-${process.pid}.raw`);
  await writeFile(file, randomBytes(IMAGE_BYTES));
  await api.call('POST', '/v1/images', { name: SOURCE, path: file });
}

/** Groups of cpuGroups that do not overlap (their postgres backends are among all postgres). */
const OURS = ['servers', 'all postgres'];

/** The pids whose CPU a measurement adds up: the servers, their own PostgreSQL backends, all of PostgreSQL. */
async function cpuGroups(setup: Setup): Promise<Record<string, number[]>> {
  const servers = setup.servers.map((s) => s.pid);
  const groups: Record<string, number[]> = { servers };
  if (setup.schema) {
    groups['their postgres backends'] = await backendPids(servers, setup.schema.url);
    groups['all postgres'] = pidsNamed('postgres');
  }
  return groups;
}

/** `plan.rounds` rounds of `plan.perRound` provisions from `plan.clients` clients, client c on API c mod n. */
async function throughput(setup: Setup, plan: Plan): Promise<SetupResult> {
  const { apis, label, handouts } = setup;
  const api = apis[0]!;
  await api.call('PUT', `/v1/pools/${SOURCE}`, { min: plan.perRound, max: plan.perRound });
  const out = newOutcomes();
  const nonWarmNotes: string[] = [];
  const cpu: CpuSpent[] = [];
  let wallMs = 0;
  for (let round = 1; round <= plan.rounds; round++) {
    const hosts = Array.from({ length: plan.perRound }, (_, i) => `${label}-r${round}-${i}`);
    await addHosts(apis, hosts);
    const filled = await waitReady(api, SOURCE, plan.perRound);
    log(`${label} round ${round}: ${plan.perRound} hosts added, pool full (${plan.perRound} ready) after ${(filled / 1000).toFixed(1)} s more`);
    // Every client's keep-alive connection open first: the round measures provisions, not TCP handshakes.
    await Promise.all(Array.from({ length: plan.clients }, (_, c) => apis[c % apis.length]!.call('GET', '/healthz')));

    const groups = await cpuGroups(setup);
    const mark = markCpu(Object.values(groups).flat());
    const failuresBefore = out.failures.length;
    const nonWarmBefore = out.nonWarm;
    const samplesBefore = out.samples.length;
    const t0 = performance.now();
    const fromUs = nowUs();
    await Promise.all(
      Array.from({ length: plan.clients }, async (_, c) => {
        const client = apis[c % apis.length]!;
        for (let i = c; i < hosts.length; i += plan.clients) await provision(client, hosts[i]!, out, handouts, nonWarmNotes);
      }),
    );
    const ms = performance.now() - t0;
    setup.windows.push([fromUs, nowUs()]);
    const spent = cpuSince(mark, groups);
    cpu.push(spent);
    wallMs += ms;
    log(
      `${label} round ${round}: ${plan.perRound} provisions in ${ms.toFixed(0)} ms = ${((plan.perRound / ms) * 1000).toFixed(0)}/s; ` +
        `${describe(out.samples.slice(samplesBefore))}; ${out.nonWarm - nonWarmBefore} not warm, ${out.failures.length - failuresBefore} failed`,
    );
    log(`${label} round ${round}: ${describeCpu(spent, OURS)}`);
  }
  log(`${label}: the server's own time (waitMs): ${describe(out.serverMs)}`);
  const total = plan.rounds * plan.perRound;
  return { label, instances: setup.servers.length, out, wallMs, perS: (total / wallMs) * 1000, nonWarmNotes, doubles: handouts.doubles, reissued: handouts.reissued, cpu };
}

/** The state checked against itself and the replies; the disagreements are counted as double hand-outs. */
async function checkState(setup: Setup, api: Api): Promise<string[]> {
  const problems = await disagreements(api, setup.handouts.held());
  log(`${setup.label}: state check: ${problems.length === 0 ? 'the mapped copies agree with the hosts and the replies' : `${problems.length} disagreements`}`);
  for (const p of problems.slice(0, 5)) log(`  ${p}`);
  return problems;
}

/** Stops the servers and drops the schema; with --cpu-prof, the summaries of the servers' profiles over the measured rounds. */
async function stopSetup(setup: Setup): Promise<string[]> {
  await Promise.all(setup.servers.map((s) => s.stop()));
  await setup.schema?.drop();
  const lines: string[] = [];
  if (setup.profileDir === undefined) return lines;
  const files = await readdir(setup.profileDir);
  for (const s of setup.servers) {
    // Node names them CPU.DATE.TIME.PID.THREAD.SEQ.cpuprofile; thread 0 is the main thread.
    const main = files.find((n) => {
      const f = n.split('.');
      return f[0] === 'CPU' && f[3] === String(s.pid) && f[4] === '0' && n.endsWith('.cpuprofile');
    });
    if (main === undefined) continue;
    lines.push(`${setup.label} ${s.name} (pid ${s.pid}) main thread over the measured rounds, ${join(setup.profileDir, main)}:`);
    for (const line of await summarizeProfile(join(setup.profileDir, main), REPO, setup.windows, 10)) lines.push(`  ${line}`);
  }
  return lines;
}

interface TakeoverResult {
  readonly takeoverS: number | undefined;
  readonly killed: string;
  readonly by: string | undefined;
  readonly out: Outcomes;
  readonly nonWarmNotes: string[];
  /** Requests cut off by the kill (sent to the killed instance before it was taken out of the rotation). */
  readonly cutOff: number;
  readonly releaseFailures: string[];
  readonly provisions: number;
}

/**
 * Steady provision/release load on the instances of `setup`; the instance leading the pool is
 * taken out of the clients' rotation, its requests in flight answered, and SIGKILLed; the
 * seconds until a survivor reports another instance leading the pool are the takeover time.
 */
async function takeover(setup: Setup, plan: Plan): Promise<TakeoverResult> {
  const { servers, handouts } = setup;
  const api = servers[0]!.api;
  await api.call('PUT', `/v1/pools/${SOURCE}`, { min: plan.takeoverPool, max: plan.takeoverPool });
  const hosts = Array.from({ length: plan.takeoverClients }, (_, i) => `takeover-${i}`);
  await addHosts(setup.apis, hosts);
  const filled = await waitReady(api, SOURCE, plan.takeoverPool);
  log(`takeover: pool at ${plan.takeoverPool} ready after ${(filled / 1000).toFixed(1)} s`);

  const live = [...servers];
  const inFlight = new Map<Server, number>(servers.map((s) => [s, 0]));
  let killedServer: Server | undefined;
  let cutOff = 0;
  const out = newOutcomes();
  const nonWarmNotes: string[] = [];
  const releaseFailures: string[] = [];
  let stop = false;
  let provisions = 0;
  const periodMs = (plan.takeoverClients / plan.takeoverRate) * 1000;
  const through = async <T>(k: number, f: (s: Server) => Promise<T>): Promise<T> => {
    const s = live[k % live.length]!;
    inFlight.set(s, inFlight.get(s)! + 1);
    try {
      return await f(s);
    } finally {
      inFlight.set(s, inFlight.get(s)! - 1);
    }
  };
  const client = async (k: number) => {
    const host = hosts[k]!;
    // Spread the clients' starts over one period.
    await sleep((periodMs * k) / plan.takeoverClients);
    while (!stop) {
      const t0 = performance.now();
      const failuresBefore = out.failures.length;
      let mapped = false;
      await through(k, async (s) => {
        mapped = await provision(s.api, host, out, handouts, nonWarmNotes);
        provisions++;
        if (s === killedServer && out.failures.length > failuresBefore) {
          out.failures.pop();
          cutOff++;
        }
      });
      // Released whether or not the reply came (a cut-off provision may have mapped it).
      handouts.releasing(host);
      await through(k + 1, async (s) => {
        try {
          const r = await s.api.request('POST', `/v1/hosts/${host}/release`);
          // 404: not mapped, which is news only when the provision said it was.
          if (r.status !== 200 && !(r.status === 404 && !mapped)) releaseFailures.push(`${host} via ${s.name}: HTTP ${r.status} ${errorMessage(r)}`);
        } catch (e) {
          if (s === killedServer) cutOff++;
          else releaseFailures.push(`${host} via ${s.name}: ${e instanceof Error ? e.message : String(e)}`);
        }
      });
      await sleep(Math.max(0, periodMs - (performance.now() - t0)));
    }
  };
  const monitorOf = (s: Server) => {
    const m = new Api('127.0.0.1', s.port, 2);
    m.token = s.api.token;
    return m;
  };
  const load = Promise.all(hosts.map((_, k) => client(k)));
  let result: { takeoverS: number | undefined; killed: string; by: string | undefined };
  try {
    await sleep(plan.loadBeforeS * 1000);
    const rows = await api.call<InstanceRow[]>('GET', '/v1/instances');
    const leaderRow = rows.find((r) => r.live && r.pools.includes(SOURCE));
    const leader = leaderRow && servers.find((s) => s.pid === leaderRow.pid);
    if (!leader) throw new Error(`no instance of ours leads pool ${SOURCE}: ${JSON.stringify(rows)}`);
    const survivors = servers.filter((s) => s !== leader);
    log(`takeover: ${leader.name} (pid ${leader.pid}) leads pool ${SOURCE}; ${provisions} provisions so far; taking it out of the rotation`);
    live.splice(live.indexOf(leader), 1);
    for (const t0 = performance.now(); inFlight.get(leader)! > 0 && performance.now() - t0 < 2000; ) await sleep(5);
    killedServer = leader;
    const monitor = monitorOf(survivors[0]!);
    await leader.kill('SIGKILL');
    const killedAt = performance.now();
    log(`takeover: SIGKILL sent to ${leader.name}; polling GET /v1/instances on ${survivors[0]!.name}`);
    let by: string | undefined;
    let takeoverS: number | undefined;
    try {
      while (performance.now() - killedAt < 60_000) {
        const r = await monitor.request<InstanceRow[]>('GET', '/v1/instances');
        const next = r.status === 200 ? r.body.find((i) => i.live && i.pid !== leader.pid && i.pools.includes(SOURCE)) : undefined;
        if (next) {
          takeoverS = (performance.now() - killedAt) / 1000;
          by = next.name;
          break;
        }
        await sleep(20);
      }
    } finally {
      monitor.close();
    }
    const p = await getPool(survivors[0]!.api, SOURCE);
    log(
      takeoverS === undefined
        ? 'takeover: no other instance took the pool over within 60 s'
        : `takeover: ${by} leads pool ${SOURCE} ${takeoverS.toFixed(2)} s after the kill; pool: ${p.ready} ready, ${p.making} making; ${provisions} provisions so far`,
    );
    await sleep(plan.loadAfterS * 1000);
    result = { takeoverS, killed: leader.name, by };
  } finally {
    stop = true;
    await load;
  }
  const p = await getPool(live[0]!.api, SOURCE);
  log(`takeover: load stopped after ${provisions} provisions; pool: ${p.ready} ready, ${p.making} making, ${p.mapped} mapped`);
  return { ...result, out, nonWarmNotes, cutOff, releaseFailures, provisions };
}

function report(plan: Plan, quick: boolean, results: SetupResult[], tk: TakeoverResult | undefined, doubles: number, minutes: string, machine: string): void {
  const by = (label: string) => results.find((r) => r.label === label);
  const [sqlite1, pg1, pg3] = [by('sqlite_1'), by('pg_1'), by('pg_3')];
  const p99 = (r: SetupResult | undefined) => (r && r.out.samples.length > 0 ? percentile(r.out.samples, 0.99) : undefined);
  const total = plan.rounds * plan.perRound;
  console.log(`\nscale benchmark${quick ? ' (--quick)' : ''}: ${total} warm provisions per set-up (${plan.rounds} × ${plan.perRound}) from ${plan.clients} clients, 64 KiB image; ${minutes} min; ${machine}`);
  for (const r of results) {
    console.log(
      `${r.label.padEnd(9)} ${String(r.instances)} instance${r.instances > 1 ? 's' : ' '}: ${r.perS.toFixed(0).padStart(5)}/s; ${describe(r.out.samples)}; ` +
        `${r.out.nonWarm} not warm, ${r.out.failures.length} failed`,
    );
    const cpus = r.cpu.map((c) => describeCpu(c, OURS));
    for (const c of cpus) console.log(`          ${c}`);
    for (const f of r.out.failures.slice(0, 5)) console.log(`          failed: ${f}`);
    for (const n of r.nonWarmNotes.slice(0, 5)) console.log(`          not warm: ${n}`);
    if (r.reissued > 0) console.log(`          ${r.reissued} copies handed out again after their release`);
  }
  if (tk) {
    console.log(
      `takeover  ${tk.killed} (the pool's leader) SIGKILLed under ${plan.takeoverRate}/s provision+release from ${plan.takeoverClients} clients: ` +
        `${tk.takeoverS === undefined ? 'NOT taken over within 60 s' : `${tk.by} leads after ${tk.takeoverS.toFixed(2)} s`}; ` +
        `${tk.provisions} provisions, ${describe(tk.out.samples)}; ${tk.out.nonWarm} not warm, ${tk.out.failures.length} failed, ` +
        `${tk.releaseFailures.length} releases failed, ${tk.cutOff} requests cut off by the kill`,
    );
    for (const f of [...tk.out.failures, ...tk.releaseFailures].slice(0, 5)) console.log(`          failed: ${f}`);
    for (const n of tk.nonWarmNotes.slice(0, 5)) console.log(`          not warm: ${n}`);
  }
  console.log(`double hand-outs over the whole run: ${doubles}`);

  const target = (measured: boolean, ok: () => boolean, text: () => string) => measured && console.log(`${ok() ? 'PASS' : 'MISS'}  ${text()}`);
  const nonWarm = results.reduce((a, r) => a + r.out.nonWarm, 0);
  const failed = results.reduce((a, r) => a + r.out.failures.length, 0);
  target(sqlite1 !== undefined, () => sqlite1!.perS >= TARGET.sqlitePerS, () => `sqlite_1_per_s ${sqlite1!.perS.toFixed(0)} ≥ ${TARGET.sqlitePerS}`);
  target(pg3 !== undefined, () => pg3!.perS >= TARGET.pg3PerS, () => `pg_3_per_s ${pg3!.perS.toFixed(0)} ≥ ${TARGET.pg3PerS}`);
  target(
    pg3 !== undefined && pg1 !== undefined,
    () => pg3!.perS >= TARGET.pg3OverPg1 * pg1!.perS,
    () => `pg_3_per_s ${pg3!.perS.toFixed(0)} ≥ ${TARGET.pg3OverPg1} × pg_1_per_s ${pg1!.perS.toFixed(0)} = ${(TARGET.pg3OverPg1 * pg1!.perS).toFixed(0)} (ratio ${(pg3!.perS / pg1!.perS).toFixed(2)})`,
  );
  target(tk?.takeoverS !== undefined, () => tk!.takeoverS! <= TARGET.takeoverS, () => `takeover_s ${tk!.takeoverS!.toFixed(2)} ≤ ${TARGET.takeoverS}`);
  target(true, () => doubles === 0, () => `double_handouts ${doubles} = 0`);
  target(true, () => nonWarm === 0 && failed === 0, () => `every measured provision warm and answered 200: ${nonWarm} not warm, ${failed} failed`);
  console.log(
    JSON.stringify({
      sqlite_1_per_s: round2(sqlite1?.perS),
      sqlite_1_p99_ms: round2(p99(sqlite1)),
      pg_1_per_s: round2(pg1?.perS),
      pg_3_per_s: round2(pg3?.perS),
      pg_3_p99_ms: round2(p99(pg3)),
      takeover_s: round2(tk?.takeoverS),
      double_handouts: doubles,
    }),
  );
}

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      'lease-ttl': { type: 'string', default: '5s' },
      'copy-concurrency': { type: 'string', default: '4' },
      'cpu-prof': { type: 'boolean', default: false },
    },
    strict: true,
  });
  const plan = values.quick ? QUICK : FULL;
  const copyConcurrency = Number(values['copy-concurrency']);
  if (!Number.isInteger(copyConcurrency) || copyConcurrency < 1) throw new UsageError(`--copy-concurrency: a positive integer, not '${values['copy-concurrency']}'`);
  const o: SetupOptions = { leaseTtl: values['lease-ttl'], copyConcurrency, maxSockets: Math.max(64, plan.clients), cpuProf: values['cpu-prof'] };

  cleanupOnSignals();
  const t0 = performance.now();
  const loadAtStart = loadavg()[0]!.toFixed(2);
  const results: SetupResult[] = [];
  let tk: TakeoverResult | undefined;
  let doubles = 0;
  const profiles: string[] = [];
  try {
    const dir = await workDir('scale');
    for (const [label, instances, db] of [['sqlite_1', 1, false], ['pg_1', 1, true], ['pg_3', 3, true]] as const) {
      log(`${label}: starting ${instances} instance${instances > 1 ? 's' : ''} (${db ? 'PostgreSQL' : 'SQLite'})`);
      const setup = await startSetup(label, dir, instances, db, o);
      await importImage(setup.apis[0]!, dir);
      const r = await throughput(setup, plan);
      results.push(r);
      let problems = await checkState(setup, setup.apis[0]!);
      if (label === 'pg_3') {
        tk = await takeover(setup, plan);
        const survivor = setup.servers.find((s) => s.name !== tk!.killed)!;
        problems = await checkState(setup, survivor.api);
      }
      doubles += setup.handouts.doubles.length + problems.length;
      for (const d of setup.handouts.doubles.slice(0, 5)) log(`  ${d}`);
      profiles.push(...(await stopSetup(setup)));
    }
    const minutes = ((performance.now() - t0) / 60_000).toFixed(1);
    const machine = `${availableParallelism()} CPUs, load average ${loadAtStart} before it started, lease TTL ${o.leaseTtl}, copy concurrency ${copyConcurrency}`;
    if (profiles.length > 0) console.log(['', 'server CPU profiles (--cpu-prof):', ...profiles].join('\n'));
    report(plan, values.quick, results, tk, doubles, minutes, machine);
  } catch (e) {
    if (!interrupted()) {
      log(`scale bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      process.exitCode = 1;
    }
  } finally {
    await cleanup();
  }
}
