/**
 * The crash-point harness, whatever the driver: for one named point (src/domain/failpoint.ts), a
 * real `prestage serve` is set up unarmed (image `a` with 2 spares, hosts `keep` and `rel` mapped;
 * the golden `debian` and the template `web` for the template points), restarted with the point
 * armed (points off the set-up's path are armed from the start, a start fewer), driven over HTTP
 * until it SIGKILLs itself there, restarted without it on the same state, and checked: what the
 * crash left (the test's own `left`), what the event log says the restart undid, the point's own
 * checks, and the invariants (the test's own `invariants`, test/helpers/invariants.ts).
 *
 * test/e2e/crash-points.test.ts runs it on the file driver (SQLite and PostgreSQL),
 * test/e2e/rbd-crash.test.ts on Ceph RBD.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { FailpointName } from '../../src/domain/failpoint.js';
import { waitFor } from './files.js';
import { listCopies, listEvents, listHosts, waitSettled, type EventRow } from './invariants.js';
import type { ServeProcess } from './server.js';

const b64 = (s: string) => Buffer.from(s).toString('base64');

/** A template on the GPT golden `debian`; `dns` changes its bytes. */
export const templateSpec = (dns: string) => ({
  name: 'web',
  base: 'debian',
  partition: { number: 1 },
  filesystem: 'ext',
  rebuild: 'manual',
  params: { dns },
  files: [{ path: '/etc/resolv.conf', mode: 0o644, uid: 0, gid: 0, contentBase64: b64('nameserver {{dns}}\n'), substitute: true }],
  remove: ['/etc/machine-id'],
});

/** Image files in an import directory the server is given (--import-dir). */
export interface CrashSources {
  /** `a`, its next version `a2` (the rollover), `b` (the import the crash interrupts). */
  readonly a: string;
  readonly a2: string;
  readonly b: string;
  /** A GPT disk with an ext filesystem on partition 1 (test/customize/fixtures.ts makeGptDisk). */
  readonly debian: string;
}

export interface CrashCase {
  readonly src: CrashSources;
  /** Hosts whose mapping must survive the crash, with their copies (filled by the set-up). */
  readonly mappings: Record<string, string>;
}

export interface CrashScenario {
  /** The golden `debian` and the template `web` are set up too. */
  readonly template?: boolean;
  /**
   * The point is not on the set-up's path (no release, discard or build there): set up on the
   * armed server and save a start. The others set up unarmed, stop, and start armed.
   */
  readonly setupArmed?: boolean;
  /** Drives the armed server to the point (the requests die with it). */
  trigger(c: CrashCase, s: ServeProcess): Promise<void>;
  /** The mapping of `rel` is released by the trigger: it need not survive. */
  readonly releasesRel?: boolean;
  /**
   * What the crash left for the restart to undo, as the event log since the crash must show it
   * (a reconcile.* event, or the instance.reaped of the dead instance naming its work); absent:
   * nothing to undo. Resolves with what is missing, or undefined.
   */
  undone?(events: readonly EventRow[], s: ServeProcess): Promise<string | undefined>;
  /** More to check after the restart. */
  check?(c: CrashCase, s: ServeProcess): Promise<void>;
}

/** Fire and forget: the server dies answering, so no reply is expected. */
export const fire = (s: ServeProcess, method: string, path: string, body?: unknown): Promise<void> =>
  s.call(method, path, body).then(
    () => undefined,
    () => undefined,
  );

/** The work an instance.reaped event names. */
export const reaped = (events: readonly EventRow[], what: 'copies' | 'builds'): string[] =>
  events.flatMap((e) => (e.type === 'instance.reaped' ? ((e.data[what] as string[] | undefined) ?? []) : []));
/** undefined when some event of `type` matches, else what is missing. */
export const has = (events: readonly EventRow[], type: string, match: (e: EventRow) => boolean = () => true): string | undefined =>
  events.some((e) => e.type === type && match(e)) ? undefined : `no ${type} event`;

/** The reply's body, once its status is the one expected. */
export async function ok<T>(s: ServeProcess, method: string, path: string, body: unknown, status: number): Promise<T> {
  const r = await s.call<T>(method, path, body);
  assert.equal(r.status, status, `${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** The port of this server's NBD listener, as /v1/instances reports it. */
export async function nbdPort(s: ServeProcess): Promise<number> {
  const r = await s.call<{ self: boolean; nbd: string | null }[]>('GET', '/v1/instances');
  const self = r.body.find((i) => i.self);
  assert.ok(self?.nbd, JSON.stringify(r.body));
  return Number(self.nbd.slice(self.nbd.lastIndexOf(':') + 1));
}

/** Waits for the server to exit, and checks that it was by SIGKILL (at `point`, when named). */
export async function died(s: ServeProcess, point: string | undefined, timeoutMs: number): Promise<void> {
  const { child } = s;
  if (child.exitCode === null && child.signalCode === null) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      once(child, 'exit'),
      new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`the server did not die at ${point ?? 'SIGKILL'} within ${timeoutMs} ms:\n${s.stderr()}`)), timeoutMs))),
    ]).finally(() => clearTimeout(timer));
  }
  assert.equal(child.signalCode, 'SIGKILL', `the server ended by ${child.signalCode ?? `exit ${child.exitCode}`}, not SIGKILL:\n${s.stderr()}`);
  if (point !== undefined) assert.match(s.stderr(), new RegExp(`failpoint ${point.replace('.', '\\.')} reached`));
}

const provisionNew = async (_c: CrashCase, s: ServeProcess): Promise<void> => {
  assert.equal((await s.call('POST', '/v1/hosts', { id: 'new' })).status, 201);
  await fire(s, 'POST', '/v1/hosts/new/provision', { source: 'a' });
};
const newIsMapped = async (_c: CrashCase, s: ServeProcess): Promise<void> => {
  const h = (await listHosts(s)).find((x) => x.id === 'new');
  assert.ok(h?.mapping, 'the claim committed before the crash: host new keeps its mapping');
};
/** The copy in flight was failed at the restart, and the event log names it. */
const copyFailed = async (events: readonly EventRow[], s: ServeProcess): Promise<string | undefined> => {
  const failed = await listCopies(s, 'failed');
  if (failed.length !== 1) return `${failed.length} copies failed, not the one interrupted`;
  const named = [...events.filter((e) => e.type === 'reconcile.interrupted').map((e) => e.subject), ...reaped(events, 'copies')];
  return named.includes(failed[0]!.id) ? undefined : `the failing of copy ${failed[0]!.id} is not in the event log`;
};
const noImageB = async (_c: CrashCase, s: ServeProcess): Promise<void> => {
  assert.equal((await s.call('GET', '/v1/images/b')).status, 404, 'the interrupted import made no image');
};
const relReleased = async (_c: CrashCase, s: ServeProcess): Promise<void> => {
  assert.equal((await listHosts(s)).find((x) => x.id === 'rel')?.mapping, null, 'the unmap committed before the crash: rel stays released');
};
const releaseFinished = (events: readonly EventRow[]) => Promise.resolve(has(events, 'reconcile.released', (e) => e.data['hostId'] === 'rel'));
/** The interrupted build is failed (by reconcile, or by the reaping of its instance), its working copy removed. */
const buildFailed = (events: readonly EventRow[]): string | undefined =>
  has(events, 'reconcile.interrupted-build') === undefined || reaped(events, 'builds').length > 0 ? undefined : 'the failing of the build is not in the event log';
const noNewVersion = async (_c: CrashCase, s: ServeProcess): Promise<void> => {
  const t = await s.call<{ versions: unknown[]; latestBuild: { state: string } | null }>('GET', '/v1/templates/web');
  assert.equal(t.body.latestBuild?.state, 'failed', 'the interrupted build is marked failed');
  assert.equal(t.body.versions.length, 1, 'the interrupted build made no version');
};

/** How each point is reached and what its restart must show, the same on every driver. */
export const CRASH_SCENARIOS: Record<FailpointName, CrashScenario> = {
  // The temporary is removed with the dead instance's work: only its instance.reaped (or a
  // reconcile.temp-files) records it.
  'import.after-temp': {
    trigger: (c, s) => fire(s, 'POST', '/v1/images', { name: 'b', path: c.src.b }),
    undone: (events) => Promise.resolve(has(events, 'reconcile.temp-files')),
    check: noImageB,
  },
  'import.after-seal': {
    trigger: (c, s) => fire(s, 'POST', '/v1/images', { name: 'b', path: c.src.b }),
    undone: (events) => Promise.resolve(has(events, 'reconcile.orphan-image')),
    check: noImageB,
  },
  'copy.after-insert': { trigger: (_c, s) => fire(s, 'PUT', '/v1/pools/a', { min: 3, max: 3 }), undone: copyFailed },
  'copy.before-ready': { trigger: (_c, s) => fire(s, 'PUT', '/v1/pools/a', { min: 3, max: 3 }), undone: copyFailed },
  'claim.after-claim': { trigger: provisionNew, check: newIsMapped },
  'export.after-export': { trigger: provisionNew, check: newIsMapped },
  'release.after-unmap': {
    setupArmed: true,
    trigger: (_c, s) => fire(s, 'POST', '/v1/hosts/rel/release'),
    releasesRel: true,
    undone: releaseFinished,
    check: relReleased,
  },
  'release.after-remove': {
    setupArmed: true,
    trigger: (_c, s) => fire(s, 'POST', '/v1/hosts/rel/release'),
    releasesRel: true,
    undone: releaseFinished,
    check: relReleased,
  },
  'template.after-scratch': {
    template: true,
    trigger: (_c, s) => fire(s, 'POST', '/v1/templates', templateSpec('10.9.9.9')),
    undone: (events) => Promise.resolve(buildFailed(events)),
    check: noNewVersion,
  },
  'template.after-seal': {
    template: true,
    trigger: (_c, s) => fire(s, 'POST', '/v1/templates', templateSpec('10.9.9.9')),
    undone: (events) => Promise.resolve(buildFailed(events) ?? has(events, 'reconcile.orphan-image')),
    check: noNewVersion,
  },
  'rollover.after-discard': {
    setupArmed: true,
    trigger: (c, s) => fire(s, 'POST', '/v1/images', { name: 'a', path: c.src.a2 }),
    undone: (events) => Promise.resolve(has(events, 'reconcile.released', (e) => e.data['hostId'] === null)),
    check: async (_c, s) => {
      const pool = await s.call<{ image: string }>('GET', '/v1/pools/a');
      assert.equal(pool.body.image, 'a@2', 'the pool rolled over to the new version');
    },
  },
};

/** Unarmed: `a` with a pool of 2 spares, `keep` and `rel` mapped, and for templates `debian` and `web`. */
export async function setUpCrashCase(c: CrashCase, s: ServeProcess, template: boolean): Promise<void> {
  await ok(s, 'POST', '/v1/images', { name: 'a', path: c.src.a }, 201);
  await ok(s, 'PUT', '/v1/pools/a', { min: 2, max: 2 }, 200);
  for (const id of ['keep', 'rel']) await ok(s, 'POST', '/v1/hosts', { id }, 201);
  await waitFor('2 spares of a', async () => (await s.call<{ ready: number }>('GET', '/v1/pools/a')).body.ready === 2, 30_000);
  for (const id of ['keep', 'rel']) c.mappings[id] = (await ok<{ copyId: string }>(s, 'POST', `/v1/hosts/${id}/provision`, { source: 'a' }, 200)).copyId;
  if (template) {
    await ok(s, 'POST', '/v1/images', { name: 'debian', path: c.src.debian }, 201);
    const t = await ok<{ build: { state: string } }>(s, 'POST', '/v1/templates', templateSpec('10.1.2.3'), 201);
    assert.equal(t.build.state, 'done');
  }
  await waitSettled(s, 60_000);
}

export interface CrashRun {
  readonly point: FailpointName;
  readonly c: CrashCase;
  /** Starts `prestage serve` on the case's state (its data directory, database, storage) with `env` added. */
  serve(env?: NodeJS.ProcessEnv): Promise<ServeProcess>;
  /** Checks what the crash left behind, before the restart: that the test reached the point it means. */
  left?(): Promise<void>;
  /** Checks every invariant on the restarted server. */
  invariants(s: ServeProcess): Promise<void>;
  /** Progress and findings, for the test's diagnostics. */
  log(message: string): void;
}

/**
 * One point, end to end: set up, arm, drive to the point, restart unarmed, check. The servers it
 * started are stopped when it returns or fails.
 */
export async function runCrashPoint(run: CrashRun): Promise<void> {
  const { point, c } = run;
  const sc = CRASH_SCENARIOS[point];
  const t0 = Date.now();
  const lap = (what: string) => run.log(`${what} at ${Date.now() - t0} ms`);
  let s: ServeProcess | undefined;
  try {
    // The state the crash must not lose, set up unarmed unless the point is off its path.
    const armed = { PRESTAGE_FAILPOINTS: point };
    s = await run.serve(sc.setupArmed ? armed : {});
    lap('started');
    await setUpCrashCase(c, s, sc.template === true);
    lap('set up');
    const seqBefore = Math.max(0, ...(await listEvents(s)).map((e) => e.seq));
    if (!sc.setupArmed) {
      await s.kill('SIGTERM');
      assert.equal(s.child.exitCode, 0, `a clean stop:\n${s.stderr()}`);
      s = await run.serve(armed);
      lap('armed');
    }

    // Driven to the point, where it kills itself.
    await sc.trigger(c, s);
    await died(s, point, 30_000);
    lap('died');
    await run.left?.();

    // Restarted unarmed on the same state.
    s = await run.serve();
    lap('restarted');
    await waitSettled(s, 60_000);
    lap('settled');
    const events = (await listEvents(s, seqBefore)).filter((e) => e.seq > seqBefore);
    run.log(`events: ${JSON.stringify(events.filter((e) => e.type.startsWith('reconcile.') || e.type === 'instance.reaped').map((e) => [e.type, e.subject, e.data]))}`);
    if (sc.undone) {
      const missing = await sc.undone(events, s);
      assert.equal(missing, undefined, `the restart recorded what it undid (${missing}); events since the crash: ${JSON.stringify(events.map((e) => [e.type, e.subject]))}`);
    }
    if (sc.releasesRel) delete c.mappings['rel'];
    await sc.check?.(c, s);
    await run.invariants(s);
    lap('checked');
    await s.kill('SIGTERM');
  } finally {
    await s?.kill('SIGKILL');
  }
}
