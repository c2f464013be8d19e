/**
 * The invariants (b) and (c) of test/helpers/invariants.ts for a server on `--driver rbd`, read
 * straight from the Ceph pool with the `rbd` tool (test/helpers/ceph.ts), not through the server:
 *
 *   (b) every ready or mapped copy is the RBD image `copy-<id>`, a clone of its image's
 *       `img-<sha256>@sealed` snapshot, of the image's size, and reads as the image's bytes
 *       (hosts that never wrote);
 *   (c) every RBD image in the pool belongs to a row (an `img-` to an image, a `copy-` to a ready
 *       or mapped copy; no `tmp-` left, nothing in the trash); every image row has its `img-`
 *       image with the snapshot `sealed`, protected, whose bytes hash to the row's sha256; no
 *       snapshot is unprotected while a clone depends on it, and none is protected (or exists at
 *       all) on an image no row names; the staging directory holds nothing.
 *
 *   await assertInvariants(server, rbdVolumes(ceph, pool, join(data, 'rbd-staging')), { mappings });
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { CephCluster } from './ceph.js';
import { listDir, type VolumeCheck } from './invariants.js';

/** One line of `rbd ls -l --format json`: an image's head, or one of its snapshots. */
export interface RbdEntry {
  readonly image: string;
  readonly size: number;
  readonly snapshot?: string;
  readonly protected?: 'true' | 'false';
  readonly parent?: { readonly pool: string; readonly image: string; readonly snapshot: string };
}

export interface RbdPoolListing {
  /** Image heads by name. */
  readonly heads: ReadonlyMap<string, RbdEntry>;
  readonly snapshots: readonly RbdEntry[];
  /** Names of the images in the pool's trash. */
  readonly trash: readonly string[];
}

/** Every image, snapshot and trashed image of the pool, as the `rbd` tool sees them. */
export async function listRbdPool(ceph: CephCluster, pool: string): Promise<RbdPoolListing> {
  const [ls, trash] = await Promise.all([ceph.cli('rbd', 'ls', '-l', '--format', 'json', pool), ceph.cli('rbd', 'trash', 'ls', '--format', 'json', pool)]);
  const entries = JSON.parse(ls || '[]') as RbdEntry[];
  return {
    heads: new Map(entries.filter((e) => e.snapshot === undefined).map((e) => [e.image, e])),
    snapshots: entries.filter((e) => e.snapshot !== undefined),
    trash: (JSON.parse(trash || '[]') as { name: string }[]).map((t) => t.name),
  };
}

/** sha256 of what `rbd export SPEC -` writes: the bytes of an image or a snapshot, straight from Ceph. */
export async function rbdSha256(ceph: CephCluster, spec: string): Promise<string> {
  const child = spawn('rbd', ['--conf', ceph.confPath, '--id', ceph.id, 'export', '--no-progress', spec, '-'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const hash = createHash('sha256');
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
  const closed = new Promise<number | null>((r) => child.on('close', r));
  for await (const chunk of child.stdout) hash.update(chunk as Buffer);
  const code = await closed;
  assert.equal(code, 0, `rbd export ${spec}: ${err}`);
  return hash.digest('hex');
}

/** (b) and (c) against the Ceph pool `pool` and the server's RBD staging directory. */
export function rbdVolumes(ceph: CephCluster, pool: string, stagingDir: string): VolumeCheck {
  return async ({ images, copies }, opts) => {
    const v: string[] = [];
    const { heads, snapshots, trash } = await listRbdPool(ceph, pool);
    const imageById = new Map(images.map((i) => [i.id, i]));
    const imageBySha = new Map(images.map((i) => [i.sha256, i]));
    const live = copies.filter((c) => c.state === 'ready' || c.state === 'mapped');
    const liveById = new Map(live.map((c) => [c.id, c]));
    const copyById = new Map(copies.map((c) => [c.id, c]));
    const snapOf = (image: string, snap: string) => snapshots.find((s) => s.image === image && s.snapshot === snap);
    /** Content checks (an `rbd export` each), run side by side once everything else is known. */
    const hashed: (() => Promise<string | undefined>)[] = [];
    const sameBytes = (spec: string, sha256: string, what: string) =>
      hashed.push(async () => {
        const sha = await rbdSha256(ceph, spec);
        return sha === sha256 ? undefined : `${what} has sha256 ${sha}, its row ${sha256}`;
      });

    // (b) every ready or mapped copy: a complete clone of its image's sealed snapshot.
    for (const c of live) {
      const name = `copy-${c.id}`;
      const image = imageById.get(c.imageId);
      if (!image) {
        v.push(`(b) ${c.state} copy ${c.id} is of image ${c.imageId}, which has no row`);
        continue;
      }
      if (c.volume !== `rbd:${pool}/${name}`) v.push(`(b) ${c.state} copy ${c.id} names volume ${c.volume}, not rbd:${pool}/${name}`);
      const head = heads.get(name);
      if (!head) {
        v.push(`(b) ${c.state} copy ${c.id} has no RBD image ${pool}/${name}`);
        continue;
      }
      const p = head.parent;
      if (p?.pool !== pool || p.image !== `img-${image.sha256}` || p.snapshot !== 'sealed') {
        v.push(`(b) ${c.state} copy ${c.id} is ${p ? `a clone of ${p.pool}/${p.image}@${p.snapshot}` : 'no clone'}, not of ${pool}/img-${image.sha256}@sealed`);
      }
      if (head.size !== image.sizeBytes) v.push(`(b) ${c.state} copy ${c.id} is ${head.size} bytes, its image ${image.name}@${image.version} ${image.sizeBytes}`);
      else if (c.hostId === null || !(opts.wrote ?? []).includes(c.hostId)) sameBytes(`${pool}/${name}`, image.sha256, `(b) ${c.state} copy ${c.id} of ${image.name}@${image.version}`);
    }

    // (c) every RBD image belongs to a row; every row has its image, sealed as it was imported.
    for (const [name, head] of heads) {
      const img = /^img-([0-9a-f]{64})$/.exec(name);
      const copy = /^copy-(.+)$/.exec(name);
      if (img) {
        if (!imageBySha.has(img[1]!)) v.push(`(c) RBD image ${pool}/${name} belongs to no image row`);
      } else if (copy) {
        if (!liveById.has(copy[1]!)) {
          const row = copyById.get(copy[1]!);
          v.push(`(c) RBD image ${pool}/${name} belongs to no ready or mapped copy${row ? ` (its row is ${row.state})` : ' (no row)'}`);
        }
      } else v.push(`(c) RBD image ${pool}/${name} left (no row names such an image)`);
      // A clone's parent snapshot must stay protected while the clone lives (clone format 1).
      const p = head.parent;
      if (p) {
        const parentSnap = p.pool === pool ? snapOf(p.image, p.snapshot) : undefined;
        if (p.pool === pool && parentSnap?.protected !== 'true') {
          v.push(`(c) clone ${pool}/${name} depends on ${p.pool}/${p.image}@${p.snapshot}, which is ${parentSnap ? 'unprotected' : 'gone'}`);
        }
      }
    }
    for (const s of snapshots) {
      const img = /^img-([0-9a-f]{64})$/.exec(s.image);
      if (s.snapshot !== 'sealed') v.push(`(c) snapshot ${pool}/${s.image}@${s.snapshot} is not one prestage makes`);
      if (!img || !imageBySha.has(img[1]!)) v.push(`(c) snapshot ${pool}/${s.image}@${s.snapshot} (${s.protected === 'true' ? 'protected' : 'unprotected'}) is on an image no row names`);
    }
    for (const t of trash) v.push(`(c) image ${t} left in the trash of pool ${pool}`);
    for (const i of images.filter((x) => x.state !== 'missing')) {
      const name = `img-${i.sha256}`;
      if (i.volume !== `rbd:${pool}/${name}@sealed`) v.push(`(c) image ${i.name}@${i.version} names volume ${i.volume}, not rbd:${pool}/${name}@sealed`);
      if (!heads.has(name)) {
        v.push(`(c) image ${i.name}@${i.version} is ${i.state} with no RBD image ${pool}/${name}`);
        continue;
      }
      const sealed = snapOf(name, 'sealed');
      if (!sealed) {
        v.push(`(c) image ${i.name}@${i.version} has no snapshot ${pool}/${name}@sealed`);
        continue;
      }
      if (sealed.protected !== 'true') v.push(`(c) the snapshot ${pool}/${name}@sealed of ${i.name}@${i.version} is not protected`);
      if (sealed.size !== i.sizeBytes) v.push(`(c) the snapshot ${pool}/${name}@sealed is ${sealed.size} bytes, its row ${i.sizeBytes}`);
      else sameBytes(`${pool}/${name}@sealed`, i.sha256, `(c) the snapshot ${pool}/${name}@sealed of ${i.name}@${i.version}`);
    }
    for (const f of await listDir(stagingDir)) if (f !== 'scratch') v.push(`(c) staging file ${f} left in ${stagingDir}`);
    for (const f of await listDir(join(stagingDir, 'scratch'))) v.push(`(c) scratch file scratch/${f} left in ${stagingDir}`);
    for (const found of await Promise.all(hashed.map((h) => h()))) if (found !== undefined) v.push(found);
    return v;
  };
}
