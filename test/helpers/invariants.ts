/**
 * The invariants of docs/design.md checked from outside, against a running server and its data
 * directory: what a crash test asserts after a restart, and any other test may too.
 *
 *   (a) no copy handed out twice: mapping copy ids are distinct, each mapped copy belongs to
 *       exactly the host that maps it;
 *   (b) no ready copy that is not complete: every ready or mapped copy's file exists, with its
 *       image's size and sha256 (copies of hosts that never wrote are byte-identical);
 *   (c) no orphan file or row: copies/ holds exactly the ready and mapped copies, no partial
 *       file, tmp/ is empty, every file in images/ belongs to an image row (and every image row
 *       has its file: none is `missing`), no copy left `making` or `releasing`, no build left
 *       `building`;
 *   (d) no lost mapping: the hosts named in `mappings` are still mapped to the same copies, every
 *       mapped host is offered its copy over NBD before anyone asks, and a provision again gets
 *       the same copy back (`existing`).
 *
 * (b) and (c) look at the volumes where they live: by default files in the data directory
 * (`fileVolumes`); a test on another driver passes its own `VolumeCheck` instead of the directory
 * (test/helpers/rbd-invariants.ts: a Ceph pool). The rest is the same whatever the driver.
 *
 * `collectViolations` returns every violation found (none: []); `assertInvariants` fails with all
 * of them at once.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256File, waitFor } from './files.js';

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
/** A running server's API: the ServeProcess of server.ts and the TestApp of app.ts both fit. */
export interface ApiClient {
  call<T = unknown>(method: Method, path: string, body?: unknown): Promise<{ status: number; body: T }>;
}

export interface ImageRow { id: string; name: string; version: number; sha256: string; sizeBytes: number; volume: string; state: string; kind: string }
export interface CopyRow { id: string; imageId: string; pool: string | null; state: string; volume: string; hostId: string | null }
export interface HostRow { id: string; mapping: { copyId: string; source: string; imageId: string } | null }
export interface PoolRow { source: string; target: number; ready: number; making: number; mapped: number }
export interface TemplateRow { name: string; latestBuild: { id: string; state: string } | null }
export interface EventRow { seq: number; type: string; subject: string; data: Record<string, unknown> }

const LIMIT = '?limit=5000';

async function get<T>(api: ApiClient, path: string): Promise<T> {
  const r = await api.call<T>('GET', path);
  assert.equal(r.status, 200, `GET ${path} answered ${r.status}: ${JSON.stringify(r.body)}`);
  return r.body;
}

export const listImages = (api: ApiClient): Promise<ImageRow[]> => get(api, `/v1/images${LIMIT}`);
export const listCopies = (api: ApiClient, state?: string): Promise<CopyRow[]> => get(api, `/v1/copies${LIMIT}${state === undefined ? '' : `&state=${state}`}`);
export const listHosts = (api: ApiClient): Promise<HostRow[]> => get(api, `/v1/hosts${LIMIT}`);
export const listPools = (api: ApiClient): Promise<PoolRow[]> => get(api, `/v1/pools${LIMIT}`);
export const listTemplates = (api: ApiClient): Promise<TemplateRow[]> => get(api, `/v1/templates${LIMIT}`);
export const listEvents = (api: ApiClient, after = 0): Promise<EventRow[]> => get(api, `/v1/events${LIMIT}&after=${after}`);

/**
 * Waits until nothing is under way: every pool holds its target of spares with nothing in
 * flight, no copy is `making` or `releasing`, no template build is `building`.
 */
export async function waitSettled(api: ApiClient, timeoutMs = 60_000): Promise<void> {
  let last = '';
  try {
    await waitFor(
      'the server to settle (pools at target, nothing making, releasing or building)',
      async () => {
        const [pools, making, releasing, templates] = await Promise.all([listPools(api), listCopies(api, 'making'), listCopies(api, 'releasing'), listTemplates(api)]);
        const building = templates.filter((t) => t.latestBuild?.state === 'building');
        last = JSON.stringify({ pools: pools.map((p) => [p.source, p.ready, p.target, p.making]), making: making.length, releasing: releasing.length, building: building.length });
        return pools.every((p) => p.ready === p.target && p.making === 0) && making.length === 0 && releasing.length === 0 && building.length === 0;
      },
      timeoutMs,
      100,
    );
  } catch (e) {
    throw new Error(`${e instanceof Error ? e.message : String(e)}; last seen ${last}`, { cause: e });
  }
}

export interface InvariantOptions {
  /** Hosts whose mapping must have survived, with the copy each had. */
  readonly mappings?: Readonly<Record<string, string>>;
  /**
   * The NBD port, to check that every mapped host is offered its copy before anyone provisions
   * again (needs nbdinfo; omit with the local-path exporter).
   */
  readonly nbdPort?: number;
  /** Where to write the hosts' PSK files for nbdinfo (a test's own directory). */
  readonly scratchDir?: string;
  /** Hosts that may have written to their copies: only their size is checked against the image. */
  readonly wrote?: readonly string[];
}

function nbdinfo(...args: string[]): Promise<{ ok: boolean; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile('nbdinfo', args, { encoding: 'utf8', timeout: 30_000 }, (e, stdout, stderr) => resolve({ ok: e === null, out: stdout, err: `${stderr}${e ? ` (${e.message})` : ''}` }));
  });
}

/** A folder's entries, sorted; none when it does not exist. */
export async function listDir(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** The rows collectViolations read, handed to the check of the volumes. */
export interface ServerState {
  readonly images: readonly ImageRow[];
  readonly copies: readonly CopyRow[];
  readonly hosts: readonly HostRow[];
  readonly templates: readonly TemplateRow[];
}

/** (b) and (c) for one kind of storage: the violations found between the rows and the volumes. */
export type VolumeCheck = (state: ServerState, opts: InvariantOptions) => Promise<string[]>;

/** (b) and (c) for the file driver: copies, images and temporaries in the data directory. */
export function fileVolumes(dataDir: string): VolumeCheck {
  return async ({ images, copies }, opts) => {
    const v: string[] = [];
    const imageById = new Map(images.map((i) => [i.id, i]));
    const live = copies.filter((c) => c.state === 'ready' || c.state === 'mapped');
    const copyById = new Map(copies.map((c) => [c.id, c]));

    // (b) no ready copy that is not complete.
    for (const c of live) {
      const file = join(dataDir, 'copies', `${c.id}.raw`);
      const image = imageById.get(c.imageId);
      if (!image) {
        v.push(`(b) ${c.state} copy ${c.id} is of image ${c.imageId}, which has no row`);
        continue;
      }
      if (c.volume !== file) v.push(`(b) ${c.state} copy ${c.id} names volume ${c.volume}, not ${file}`);
      let size: number;
      try {
        size = (await stat(file)).size;
      } catch {
        v.push(`(b) ${c.state} copy ${c.id} has no file ${file}`);
        continue;
      }
      if (size !== image.sizeBytes) v.push(`(b) ${c.state} copy ${c.id} is ${size} bytes, its image ${image.name}@${image.version} ${image.sizeBytes}`);
      else if (c.hostId === null || !(opts.wrote ?? []).includes(c.hostId)) {
        const sha = await sha256File(file);
        if (sha !== image.sha256) v.push(`(b) ${c.state} copy ${c.id} has sha256 ${sha}, its image ${image.name}@${image.version} ${image.sha256}`);
      }
    }

    // (c) no orphan file, no row without its file.
    const copyFiles = await listDir(join(dataDir, 'copies'));
    const expected = live.map((c) => `${c.id}.raw`).sort();
    for (const f of copyFiles.filter((x) => x.endsWith('.partial'))) v.push(`(c) partial copy file copies/${f}`);
    for (const f of copyFiles.filter((x) => !x.endsWith('.partial') && !expected.includes(x))) {
      const row = copyById.get(f.replace(/\.raw$/, ''));
      v.push(`(c) copy file copies/${f} belongs to no ready or mapped copy${row ? ` (its row is ${row.state})` : ' (no row)'}`);
    }
    for (const f of expected.filter((x) => !copyFiles.includes(x))) v.push(`(c) copy ${f} is ready or mapped with no file`);
    for (const f of await listDir(join(dataDir, 'tmp'))) v.push(`(c) temporary file tmp/${f} left`);
    const imageFiles = new Set(images.map((i) => `${i.sha256}.raw`));
    const onDisk = await listDir(join(dataDir, 'images'));
    for (const f of onDisk) if (!imageFiles.has(f)) v.push(`(c) image file images/${f} belongs to no image row`);
    for (const i of images) {
      if (i.state !== 'missing' && !onDisk.includes(`${i.sha256}.raw`)) v.push(`(c) image ${i.name}@${i.version} is ${i.state} with no file images/${i.sha256}.raw`);
    }
    return v;
  };
}

/** Every invariant violation found in the server's state and its volumes (files in `dataDir`, or what `volumes` checks). */
export async function collectViolations(api: ApiClient, volumes: string | VolumeCheck, opts: InvariantOptions = {}): Promise<string[]> {
  const v: string[] = [];
  const [images, copies, hosts, templates] = await Promise.all([listImages(api), listCopies(api), listHosts(api), listTemplates(api)]);
  const copyById = new Map(copies.map((c) => [c.id, c]));

  // (a) no copy handed out twice.
  const mapped = hosts.filter((h) => h.mapping !== null);
  const seen = new Map<string, string>();
  for (const h of mapped) {
    const id = h.mapping!.copyId;
    const other = seen.get(id);
    if (other !== undefined) v.push(`(a) copy ${id} is mapped to both ${other} and ${h.id}`);
    seen.set(id, h.id);
    const c = copyById.get(id);
    if (!c) v.push(`(a) host ${h.id} maps copy ${id}, which has no row`);
    else if (c.state !== 'mapped') v.push(`(a) host ${h.id} maps copy ${id}, which is ${c.state}`);
    else if (c.hostId !== h.id) v.push(`(a) host ${h.id} maps copy ${id}, whose row names host ${String(c.hostId)}`);
  }
  for (const c of copies.filter((x) => x.state === 'mapped')) {
    const holders = mapped.filter((h) => h.mapping!.copyId === c.id).map((h) => h.id);
    if (holders.length !== 1 || holders[0] !== c.hostId) v.push(`(a) mapped copy ${c.id} (row host ${String(c.hostId)}) is mapped by [${holders.join(', ')}]`);
  }

  // (b) and (c) on the volumes; (c) on the rows.
  v.push(...(await (typeof volumes === 'string' ? fileVolumes(volumes) : volumes)({ images, copies, hosts, templates }, opts)));
  for (const i of images.filter((x) => x.state === 'missing')) v.push(`(c) image ${i.name}@${i.version} is missing its volume`);
  for (const c of copies.filter((x) => x.state === 'making' || x.state === 'releasing')) v.push(`(c) copy ${c.id} left ${c.state}`);
  for (const t of templates) if (t.latestBuild?.state === 'building') v.push(`(c) build ${t.latestBuild.id} of template ${t.name} left building`);

  // (d) no lost mapping, and every mapping exported again at start.
  for (const [hostId, copyId] of Object.entries(opts.mappings ?? {})) {
    const h = hosts.find((x) => x.id === hostId);
    if (h?.mapping?.copyId !== copyId) v.push(`(d) host ${hostId} was mapped to ${copyId}, now ${h ? (h.mapping?.copyId ?? 'to nothing') : 'gone'}`);
  }
  if (opts.nbdPort !== undefined) {
    assert.ok(opts.scratchDir, 'nbdPort needs a scratchDir for the PSK files');
    for (const h of mapped) {
      const key = await api.call<{ pskFileLine: string }>('GET', `/v1/hosts/${h.id}/key`);
      const pskFile = join(opts.scratchDir, `${h.id}.psk`);
      await writeFile(pskFile, `${key.body.pskFileLine}\n`, { mode: 0o600 });
      const r = await nbdinfo('--list', '--json', `nbds://${h.id}@127.0.0.1:${opts.nbdPort}/?tls-psk-file=${pskFile}`);
      if (!r.ok) {
        v.push(`(d) host ${h.id} cannot list its exports: ${r.err.trim()}`);
        continue;
      }
      const names = (JSON.parse(r.out) as { exports: { 'export-name': string }[] }).exports.map((e) => e['export-name']);
      if (names.length !== 1 || names[0] !== h.mapping!.copyId) v.push(`(d) host ${h.id} (mapped to ${h.mapping!.copyId}) is offered exports [${names.join(', ')}]`);
    }
  }
  for (const h of mapped) {
    const again = await api.call<{ copyId?: string; existing?: boolean }>('POST', `/v1/hosts/${h.id}/provision`, { source: h.mapping!.source });
    if (again.status !== 200 || again.body.existing !== true || again.body.copyId !== h.mapping!.copyId) {
      v.push(`(d) host ${h.id} provisioned again from ${h.mapping!.source}: ${again.status} ${JSON.stringify(again.body)}, not its copy ${h.mapping!.copyId}`);
    }
  }
  return v;
}

/** Fails listing every violation. */
export async function assertInvariants(api: ApiClient, volumes: string | VolumeCheck, opts: InvariantOptions = {}): Promise<void> {
  const v = await collectViolations(api, volumes, opts);
  assert.deepEqual(v, [], `invariants broken:\n  ${v.join('\n  ')}`);
}
