/**
 * Templates through the real HTTP API of a real `prestage serve` (file driver on this machine's
 * disk: a copy is a reflink where the filesystem shares blocks, else a byte copy):
 *
 *   golden    a GPT raw disk (1 GiB; --quick 128 MiB) with an ext4 root made by `mke2fs -d`
 *             from a generated /etc and a slice of this machine's /usr, imported
 *   build     the README's template (examples/templates/web.yaml: resolv.conf, timesyncd,
 *             root's authorized_keys, motd, machine-id and SSH host keys removed, a cidata
 *             ISO seed, per-host data) applied: apply → version 1, then a rebuild that makes
 *             nothing new (unchanged); 3 rounds, medians reported
 *   rollover  the template's pool at min 4, hosts provisioning and releasing in a loop, a new
 *             golden version imported: the build record's rolloverMs (new golden version
 *             stored → new template version served) and refilledMs (→ the pool holds its 4
 *             new-version spares), the provisions meanwhile, failures, and old-version copies
 *             handed out after the rollover
 *
 * Progress goes to stderr; the summary to stdout, its last line one JSON object.
 */
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { readFile, rm } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { TemplateSpec } from '../src/domain/index.js';
import { readTemplateSpecText } from '../src/cli/template-yaml.js';
import { cleanup, cleanupOnSignals, interrupted } from './lib/cleanup.js';
import { extRead, isoLabel, makeGoldenDisk, nextGoldenVersion, type GoldenDisk } from './lib/golden-disk.js';
import { ApiError, errorMessage, type Api } from './lib/http.js';
import { log, sleep } from './lib/log.js';
import { REPO, startServer, workDir } from './lib/server.js';
import { describe, percentile, round2 } from './lib/stats.js';

interface Plan {
  readonly diskMiB: number;
  readonly contentMiB: number;
  readonly rounds: number;
  readonly hosts: number;
  readonly pool: { readonly min: number; readonly max: number };
  /** Provisions that must have started (and ended) after the rollover before the stream stops. */
  readonly after: number;
}

const FULL: Plan = { diskMiB: 1024, contentMiB: 320, rounds: 3, hosts: 4, pool: { min: 4, max: 8 }, after: 8 };
const QUICK: Plan = { diskMiB: 128, contentMiB: 40, rounds: 3, hosts: 4, pool: { min: 4, max: 8 }, after: 8 };

const GOLDEN = 'debian-12';
const SPEC_FILE = 'examples/templates/web.yaml';
const REFILL_TIMEOUT_MS = 20 * 60_000;

interface Build {
  readonly id: string;
  readonly state: 'building' | 'done' | 'unchanged' | 'failed';
  readonly trigger: string;
  readonly version: number | null;
  readonly error: string | null;
  readonly buildMs: number | null;
  readonly rolloverMs: number | null;
  readonly refilledMs: number | null;
  readonly finishedAt: string | null;
  readonly log?: string;
}

interface Template {
  readonly versions: readonly { readonly id: string; readonly ref: string; readonly version: number; readonly volume: string }[];
  readonly latestBuild: Build | null;
}

interface Image {
  readonly version: number;
  readonly sizeBytes: number;
  readonly createdAt: string;
}

interface PoolView {
  readonly image: string | null;
  readonly ready: number;
  readonly making: number;
  readonly mapped: number;
}

interface Copy {
  readonly imageId: string;
  readonly pool: string | null;
  readonly method: string | null;
  readonly copyMs: number | null;
}

interface Provision {
  readonly image: string;
  readonly outcome: string;
}

const ms = (x: number) => `${(x / 1000).toFixed(2)} s`;
const median = (xs: readonly number[]) => percentile(xs, 0.5);

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms(timeoutMs)} waiting for ${what}`);
    await sleep(100);
  }
}

/** Until no copy is being made anywhere: a measured build never shares the disk with a pool's copies. */
async function waitNoCopies(api: Api): Promise<void> {
  await waitFor('copies in progress to end', 10 * 60_000, async () => ((await api.call<unknown[]>('GET', '/v1/copies?state=making')).length === 0 ? true : undefined));
}

async function importGolden(api: Api, disk: GoldenDisk): Promise<{ image: Image; ms: number }> {
  const t0 = performance.now();
  const image = await api.call<Image>('POST', '/v1/images', { name: GOLDEN, path: disk.path });
  return { image, ms: performance.now() - t0 };
}

/** The README's template, on our golden image. */
async function loadSpec(): Promise<TemplateSpec> {
  const spec = readTemplateSpecText(await readFile(join(REPO, SPEC_FILE), 'utf8'), SPEC_FILE);
  return { ...spec, base: GOLDEN };
}

// ---------------------------------------------------------------------------------------
// Builds.

interface Round {
  readonly buildMs: number;
  readonly applyWallMs: number;
  readonly version: number;
  readonly unchangedMs: number;
  readonly unchangedWallMs: number;
}

interface BuildResults {
  readonly rounds: Round[];
  readonly copyMethod: string;
  readonly log: string;
  /** Where each apply's build spent its time, from its log. */
  readonly phases: ReadonlyMap<string, number>[];
  readonly unchangedPhases: ReadonlyMap<string, number>[];
}

/**
 * Where a build spent its time, from its log (`   123 ms  line`, tool output indented further):
 * the working copy, each tool run (`$ tool …` until the next line of the build's own), and the
 * seal (hash and store) before `sealed read-only`.
 */
function buildPhases(buildLog: string): Map<string, number> {
  const steps = [...buildLog.matchAll(/^\s*(\d+) ms {2}(\S.*)$/gm)].map((m) => ({ at: Number(m[1]), text: m[2]! }));
  const phases = new Map<string, number>();
  const add = (k: string, v: number) => phases.set(k, (phases.get(k) ?? 0) + v);
  steps.forEach((step, i) => {
    const next = steps[i + 1];
    const copy = /^working copy made by \S+ in (\d+) ms/.exec(step.text);
    if (copy) add('working copy', Number(copy[1]));
    else if (step.text.startsWith('$ ') && next) add(step.text.slice(2).split(' ')[0]!, next.at - step.at);
    else if (step.text.startsWith('sealed read-only') && i > 0) add('seal (hash, store)', step.at - steps[i - 1]!.at);
  });
  const total = steps.at(-1)?.at;
  if (total !== undefined) add('total', total);
  return phases;
}

async function buildRounds(api: Api, spec: TemplateSpec, n: number): Promise<BuildResults> {
  const name = spec.name;
  const rounds: Round[] = [];
  let copyMethod = '?';
  let firstLog = '';
  const phases: Map<string, number>[] = [];
  const unchangedPhases: Map<string, number>[] = [];
  for (let i = 1; i <= n; i++) {
    await waitNoCopies(api);
    const t0 = performance.now();
    const applied = await api.call<{ build: Build }>('POST', '/v1/templates', spec);
    const applyWallMs = performance.now() - t0;
    // The template got the server's default pool: no copies in the way of the next measure.
    await api.call('PUT', `/v1/pools/${name}`, { min: 0, max: 0 });
    const b = applied.build;
    if (b.state !== 'done' || b.version === null || b.buildMs === null) throw new Error(`apply ${i}: build ${b.state} (${b.error ?? 'no error'})`);
    const [withLog] = await api.call<Build[]>('GET', `/v1/templates/${name}/builds?version=${b.version}`);
    const buildLog = withLog?.log ?? '';
    if (i === 1) firstLog = buildLog;
    phases.push(buildPhases(buildLog));
    copyMethod = /working copy made by (\S+)/.exec(buildLog)?.[1] ?? copyMethod;

    await waitNoCopies(api);
    const t1 = performance.now();
    const again = await api.call<Build>('POST', `/v1/templates/${name}/build`);
    const unchangedWallMs = performance.now() - t1;
    if (again.state !== 'unchanged' || again.buildMs === null) throw new Error(`rebuild ${i}: build ${again.state}, expected unchanged (${again.error ?? 'no error'})`);
    const [unchangedBuild] = await api.call<Build[]>('GET', `/v1/templates/${name}/builds`);
    if (unchangedBuild?.id === again.id) unchangedPhases.push(buildPhases(unchangedBuild.log ?? ''));
    rounds.push({ buildMs: b.buildMs, applyWallMs, version: b.version, unchangedMs: again.buildMs, unchangedWallMs });
    log(`round ${i}/${n}: apply → ${name}@${b.version} in ${ms(b.buildMs)} (HTTP ${ms(applyWallMs)}), copy by ${copyMethod}; unchanged rebuild in ${ms(again.buildMs)}`);
    if (i < n) {
      await waitNoCopies(api);
      await api.call('DELETE', `/v1/templates/${name}`);
    }
  }
  return { rounds, copyMethod, log: firstLog, phases, unchangedPhases };
}

/** What the template should have done to the golden, read back from the sealed version's file. */
async function checkVersion(disk: GoldenDisk, name: string, volume: string, release: string): Promise<string[]> {
  const problems: string[] = [];
  const expect = async (file: string, want: RegExp | undefined) => {
    const got = await extRead(volume, disk.root, file);
    if (want === undefined ? got !== undefined : got === undefined || !want.test(got)) problems.push(`${file}: ${got === undefined ? 'missing' : JSON.stringify(got.slice(0, 80))}, expected ${want ? String(want) : 'removed'}`);
  };
  await expect('/etc/resolv.conf', /nameserver 10\.40\.0\.53/);
  await expect('/etc/systemd/timesyncd.conf', /NTP=ntp1\.ber\.example\.net/);
  await expect('/root/.ssh/authorized_keys', /ops@ber\.example\.net/);
  await expect('/etc/motd', new RegExp(`template ${name}`));
  await expect('/etc/machine-id', undefined);
  await expect('/etc/ssh/ssh_host_ed25519_key', undefined);
  await expect('/etc/golden-release', new RegExp(release));
  await expect('/etc/os-release', /bookworm/);
  const label = await isoLabel(volume, disk.cidata);
  if (label?.toLowerCase() !== 'cidata') problems.push(`cidata partition: ISO label ${label ?? '(no ISO)'}, expected cidata`);
  return problems;
}

// ---------------------------------------------------------------------------------------
// Rollover under a stream of provisions.

interface Sample {
  readonly host: string;
  /** Date.now() at the request: comparable with the server's timestamps (same machine). */
  readonly started: number;
  readonly ended: number;
  readonly ms: number;
  readonly status: number;
  readonly image: string;
  readonly outcome: string;
  readonly why: string;
}

interface RolloverResults {
  readonly fillMs: number;
  readonly holdMs: number;
  readonly importMs: number;
  readonly build: Build;
  readonly newRef: string;
  readonly since: number;
  readonly rolledAt: number;
  readonly samples: readonly Sample[];
  readonly metaProblems: string[];
  /** Ready spares of the pool once refilled: how many are of the old version, and how they were made. */
  readonly poolMin: number;
  readonly hosts: number;
  readonly oldSpares: number;
  readonly spareMethods: string;
  readonly spareCopyMs: readonly number[];
}

const hostVars = (i: number) => ({
  hostname: `web-${String(i).padStart(3, '0')}`,
  address: `10.40.8.${10 + i}/24`,
  ssh_key: `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI${String(i).padStart(3, '0')}benchkeybenchkeybenchkeybenchkey team@ber.example.net`,
});

/** The host's own per-host documents, with its credentials, while it is mapped. */
async function checkPerHost(api: Api, host: string, vars: ReturnType<typeof hostVars>): Promise<string[]> {
  const { secret: key } = await api.call<{ secret: string }>('GET', `/v1/hosts/${host}/meta-credential`);
  const get = async (doc: string, user = host, secret = key) => {
    const r = await fetch(`http://${api.host}:${api.port}/v1/meta/${host}/${doc}`, { headers: { authorization: `Basic ${Buffer.from(`${user}:${secret}`).toString('base64')}` } });
    return { status: r.status, text: await r.text() };
  };
  const problems: string[] = [];
  const meta = await get('meta-data');
  if (meta.status !== 200 || !meta.text.includes(`local-hostname: ${vars.hostname}`)) problems.push(`meta-data: HTTP ${meta.status} ${JSON.stringify(meta.text.slice(0, 100))}`);
  const net = await get('network-config');
  if (net.status !== 200 || !net.text.includes(vars.address)) problems.push(`network-config: HTTP ${net.status} ${JSON.stringify(net.text.slice(0, 100))}`);
  const wrong = await get('meta-data', host, '00'.repeat(16));
  if (wrong.status !== 401) problems.push(`meta-data with a wrong credential: HTTP ${wrong.status}, expected 401`);
  return problems;
}

async function rollover(api: Api, plan: Plan, name: string, v2: GoldenDisk): Promise<RolloverResults> {
  const hosts = Array.from({ length: plan.hosts }, (_, i) => `web-${String(i).padStart(3, '0')}`);
  for (const [i, id] of hosts.entries()) await api.call('POST', '/v1/hosts', { id, vars: hostVars(i) });

  await waitNoCopies(api);
  const t0 = performance.now();
  await api.call('PUT', `/v1/pools/${name}`, plan.pool);
  const fillMs = await waitFor('the pool to fill', REFILL_TIMEOUT_MS, async () => ((await api.call<PoolView>('GET', `/v1/pools/${name}`)).ready >= plan.pool.min ? performance.now() - t0 : undefined));
  log(`pool ${name}: ${plan.pool.min} spares made in ${ms(fillMs)}`);

  // Per-host data of a mapped host, served to it alone.
  await api.call('POST', `/v1/hosts/${hosts[0]}/provision`, { source: name });
  const metaProblems = await checkPerHost(api, hosts[0]!, hostVars(0));
  await api.call('POST', `/v1/hosts/${hosts[0]}/release`);
  await waitFor('the pool to refill', REFILL_TIMEOUT_MS, async () => ((await api.call<PoolView>('GET', `/v1/pools/${name}`)).ready >= plan.pool.min ? true : undefined));
  await waitNoCopies(api);

  // Each host holds its copy for as long as the pool took to fill, then is off as long: the
  // stream takes half of what the pool can make, so the pool can refill while it runs.
  const holdMs = Math.max(250, Math.round(fillMs));
  const samples: Sample[] = [];
  let stop = false;
  const stream = async (host: string, i: number) => {
    await sleep((i * holdMs * 2) / plan.hosts);
    while (!stop) {
      const started = Date.now();
      const t = performance.now();
      let status = 0;
      let image = '';
      let outcome = '';
      let why = '';
      try {
        const r = await api.request<Provision>('POST', `/v1/hosts/${host}/provision`, { source: name });
        status = r.status;
        if (r.status === 200) ({ image, outcome } = r.body);
        else why = errorMessage(r);
      } catch (e) {
        why = e instanceof Error ? e.message : String(e);
      }
      const sample = { host, started, ended: Date.now(), ms: performance.now() - t, status, image, outcome, why };
      samples.push(sample);
      log(`  ${host}: ${status === 200 ? `${image} ${outcome}` : `FAILED HTTP ${status} ${why}`} in ${sample.ms.toFixed(1)} ms`);
      if (status === 200) {
        await sleep(holdMs);
        const rel = await api.request('POST', `/v1/hosts/${host}/release`);
        if (rel.status !== 200) samples.push({ host, started: Date.now(), ended: Date.now(), ms: rel.ms, status: rel.status, image: '', outcome: 'release', why: errorMessage(rel) });
      }
      if (!stop) await sleep(holdMs);
    }
  };
  const streams = Promise.all(hosts.map((h, i) => stream(h, i)));
  try {
    log(`stream: ${plan.hosts} hosts, each provisions, holds ${ms(holdMs)}, releases, waits ${ms(holdMs)}`);
    await sleep(holdMs * 2);
    log(`importing ${GOLDEN} version 2 (${samples.length} provisions so far)`);
    const imported = await importGolden(api, v2);
    const since = Date.parse(imported.image.createdAt);
    log(`${GOLDEN}@${imported.image.version} imported in ${ms(imported.ms)}; waiting for ${name} to roll over`);
    const build = await waitFor(`${name} to rebuild on ${GOLDEN}@${imported.image.version}`, REFILL_TIMEOUT_MS, async () => {
      const b = (await api.call<Template>('GET', `/v1/templates/${name}`)).latestBuild;
      return b?.trigger === 'base-version' && b.state !== 'building' ? b : undefined;
    });
    if (build.state !== 'done' || build.finishedAt === null || build.version === null) throw new Error(`the rebuild on ${GOLDEN}@${imported.image.version} ended ${build.state}: ${build.error ?? ''}`);
    const rolledAt = Date.parse(build.finishedAt);
    const newRef = `${name}@${build.version}`;
    log(`${newRef} serves provisions ${ms(build.rolloverMs ?? NaN)} after ${GOLDEN}@${imported.image.version} was stored; waiting for the pool to refill`);
    const refilled = await waitFor(`the pool of ${name} to hold ${plan.pool.min} spares of ${newRef}`, REFILL_TIMEOUT_MS, async () => {
      const b = (await api.call<Template>('GET', `/v1/templates/${name}`)).latestBuild;
      return b?.id === build.id && b.refilledMs !== null ? b : undefined;
    });
    const tpl = await api.call<Template>('GET', `/v1/templates/${name}`);
    const newId = tpl.versions.find((v) => v.ref === newRef)?.id;
    const spares = (await api.call<Copy[]>('GET', '/v1/copies?state=ready')).filter((c) => c.pool === name);
    const oldSpares = spares.filter((c) => c.imageId !== newId).length;
    const spareMethods = [...new Set(spares.map((c) => c.method ?? '?'))].join(', ');
    const spareCopyMs = spares.flatMap((c) => (c.copyMs === null ? [] : [c.copyMs]));
    log(`pool refilled with ${newRef} ${ms(refilled.refilledMs!)} after ${GOLDEN}@${imported.image.version} was stored; streaming until ${plan.after} provisions after the rollover`);
    await waitFor(`${plan.after} provisions after the rollover`, REFILL_TIMEOUT_MS, () => (samples.filter((s) => s.started > rolledAt && s.outcome !== 'release').length >= plan.after ? true : undefined));
    return { fillMs, holdMs, importMs: imported.ms, build: refilled, newRef, since, rolledAt, samples, metaProblems, poolMin: plan.pool.min, hosts: plan.hosts, oldSpares, spareMethods, spareCopyMs };
  } finally {
    stop = true;
    await streams;
  }
}

// ---------------------------------------------------------------------------------------
// Report.

function report(title: string, spec: TemplateSpec, golden: GoldenDisk & { importMs: number; makeMs: number }, b: BuildResults, r: RolloverResults, problems: string[]): void {
  const provisions = r.samples.filter((s) => s.outcome !== 'release');
  const failed = r.samples.filter((s) => s.status !== 200);
  const during = provisions.filter((s) => s.started >= r.since && s.started <= r.rolledAt);
  const after = provisions.filter((s) => s.started > r.rolledAt);
  const oldAfter = after.filter((s) => s.status === 200 && s.image !== r.newRef);
  const refilledAt = r.since + (r.build.refilledMs ?? NaN);
  const outcomes = (ss: readonly Sample[]) => {
    const n = new Map<string, number>();
    for (const s of ss) if (s.status === 200) n.set(s.outcome, (n.get(s.outcome) ?? 0) + 1);
    return [...n].map(([k, v]) => `${v} ${k}`).join(', ') || 'none';
  };
  const lat = (ss: readonly Sample[]) => describe(ss.filter((s) => s.status === 200).map((s) => s.ms));
  const buildMs = b.rounds.map((x) => x.buildMs);
  const unchangedMs = b.rounds.map((x) => x.unchangedMs);
  const row = (k: string, v: string) => console.log(`${k.padEnd(30)} ${v}`);

  console.log(`\n${title}`);
  row('golden image', `${(golden.sizeBytes / 2 ** 20).toFixed(0)} MiB GPT raw disk, ext4 root with ${(golden.contentBytes / 2 ** 20).toFixed(0)} MiB in ${golden.files} files + generated /etc; made in ${ms(golden.makeMs)}, imported in ${ms(golden.importMs)}`);
  row('template', `${SPEC_FILE} (base ${GOLDEN}): ${spec.files.length} files, ${spec.remove.length} removals, ${spec.seed ? `${spec.seed.as} seed` : 'no seed'}, ${spec.perHost ? 'per-host data' : 'no per-host data'}`);
  row('copy method (build log)', b.copyMethod);
  row('build: apply → version 1', `median ${ms(median(buildMs))} (server's buildMs: ${buildMs.map(ms).join(', ')}; HTTP ${b.rounds.map((x) => ms(x.applyWallMs)).join(', ')})`);
  const phases = (ps: readonly ReadonlyMap<string, number>[]) => {
    const names = [...new Set(ps.flatMap((p) => [...p.keys()]))].filter((k) => k !== 'total');
    return `${names.map((k) => `${k} ${(median(ps.map((p) => p.get(k) ?? 0)) / 1000).toFixed(2)}`).join(' · ')} s (medians)`;
  };
  row('  where it goes', phases(b.phases));
  row('rebuild, unchanged', `median ${ms(median(unchangedMs))} (${unchangedMs.map(ms).join(', ')})`);
  if (b.unchangedPhases.length > 0) row('  where it goes', phases(b.unchangedPhases));
  row('pool spares', `made by ${r.spareMethods}, ${ms(median(r.spareCopyMs))} a copy (median of ${r.spareCopyMs.length}); ${r.oldSpares} of the old version left after the refill`);
  row('pool fill', `${ms(r.fillMs)} for ${r.poolMin} spares from empty; stream: ${r.hosts} hosts, hold ${ms(r.holdMs)}, off ${ms(r.holdMs)}`);
  row(`golden v2 import`, `${ms(r.importMs)} (stream running)`);
  row('rollover (rolloverMs)', `${ms(r.build.rolloverMs ?? NaN)}: ${GOLDEN} v2 stored → ${r.newRef} served (its build ${ms(r.build.buildMs ?? NaN)})`);
  row('refilled (refilledMs)', `${ms(r.build.refilledMs ?? NaN)}: → pool holds ${r.poolMin} spares of ${r.newRef}`);
  row('provisions in the stream', `${provisions.length} (${outcomes(provisions)}); ${lat(provisions)}`);
  row('  during the rollover', `${during.length} (${outcomes(during)})`);
  row('  after the rollover', `${after.length} (${outcomes(after)}), of which ${after.filter((s) => s.started > refilledAt).length} after the refill; ${lat(after)}`);
  row('  failed', `${failed.length}`);
  row('  old version after rollover', `${oldAfter.length}`);
  for (const f of failed.slice(0, 5)) console.log(`  failed: ${f.host} HTTP ${f.status} ${f.why}`);
  for (const o of oldAfter.slice(0, 5)) console.log(`  old after rollover: ${o.host} got ${o.image} at +${o.started - r.rolledAt} ms`);
  for (const p of problems) console.log(`CHECK FAILED  ${p}`);
  const pass = (ok: boolean, text: string) => console.log(`${ok ? 'PASS' : 'FAIL'}  ${text}`);
  pass(failed.length === 0, `no provision failed (${failed.length})`);
  pass(oldAfter.length === 0 && after.length > 0, `no provision started after the rollover got the old version (${oldAfter.length} of ${after.length})`);
  pass(problems.length === 0, `template content, cidata seed and per-host data as specified (${problems.length} problems)`);
  if (failed.length > 0 || oldAfter.length > 0 || problems.length > 0) process.exitCode = 1;
  console.log(
    JSON.stringify({
      golden_bytes: golden.sizeBytes,
      build_ms: round2(median(buildMs)),
      rebuild_unchanged_ms: round2(median(unchangedMs)),
      rollover_ms: r.build.rolloverMs,
      refilled_ms: r.build.refilledMs,
      provisions_during_rollover: during.length,
      failed_provisions: failed.length,
      old_after_rollover: oldAfter.length,
    }),
  );
}

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { quick: { type: 'boolean', default: false } }, strict: true });
  const plan = values.quick ? QUICK : FULL;
  cleanupOnSignals();
  const t0 = performance.now();
  const loadAtStart = loadavg()[0]!.toFixed(2);
  try {
    const dir = await workDir('template');
    const spec = await loadSpec();
    const server = await startServer({ dataDir: join(dir, 'data') });
    const { api } = server;

    const tg = performance.now();
    const v1 = await makeGoldenDisk(join(dir, 'golden-1.raw'), dir, { diskMiB: plan.diskMiB, contentMiB: plan.contentMiB, release: 'bench-golden 1' });
    const makeMs = performance.now() - tg;
    log(`golden: ${plan.diskMiB} MiB GPT disk, ${(v1.contentBytes / 2 ** 20).toFixed(0)} MiB in ${v1.files} files, made in ${ms(makeMs)}`);
    const v2 = await nextGoldenVersion(v1, join(dir, 'golden-2.raw'), dir, 'bench-golden 2');
    const imported = await importGolden(api, v1);
    // Only the template's pool copies in this bench: the golden's default pool would share the disk.
    await api.call('PUT', `/v1/pools/${GOLDEN}`, { min: 0, max: 0 });
    await rm(v1.path);
    log(`${GOLDEN}@${imported.image.version}: ${imported.image.sizeBytes} bytes imported in ${ms(imported.ms)}`);

    const builds = await buildRounds(api, spec, plan.rounds);
    // The build's own lines; the tools' output (indented further) left out.
    log(`build log of the first round:\n${builds.log.split('\n').filter((l) => /^\s*\d+ ms {2}\S/.test(l)).join('\n')}`);
    const problems: string[] = [];
    const v1Volume = (await api.call<Template>('GET', `/v1/templates/${spec.name}`)).versions.at(-1)!.volume;
    problems.push(...(await checkVersion(v1, spec.name, v1Volume, 'bench-golden 1')).map((p) => `${spec.name} on ${GOLDEN}@1: ${p}`));

    const r = await rollover(api, plan, spec.name, v2);
    problems.push(...r.metaProblems.map((p) => `per-host data: ${p}`));
    if (r.oldSpares > 0) problems.push(`${r.oldSpares} spares of the old version still in the pool once it held ${plan.pool.min} of ${r.newRef}`);
    const newVolume = (await api.call<Template>('GET', `/v1/templates/${spec.name}`)).versions.find((v) => v.ref === r.newRef)?.volume;
    if (newVolume === undefined) problems.push(`${r.newRef}: not listed`);
    else problems.push(...(await checkVersion(v1, spec.name, newVolume, 'bench-golden 2')).map((p) => `${r.newRef}: ${p}`));

    await server.stop();
    const minutes = ((performance.now() - t0) / 60_000).toFixed(1);
    const machine = `${availableParallelism()} CPUs, load average ${loadAtStart} before it started`;
    report(`template benchmark: ${plan.diskMiB} MiB golden${values.quick ? ' (--quick)' : ''}, ${minutes} min; ${machine}`, spec, { ...v1, importMs: imported.ms, makeMs }, builds, r, problems);
  } catch (e) {
    if (!interrupted()) {
      const detail = e instanceof ApiError ? e.message : e instanceof Error ? (e.stack ?? e.message) : String(e);
      log(`template bench failed: ${detail}`);
      process.exitCode = 1;
    }
  } finally {
    await cleanup();
  }
}
