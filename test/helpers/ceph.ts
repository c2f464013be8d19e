/**
 * A throwaway single-node Ceph cluster for the RBD driver's tests: one mon, one mgr and one
 * BlueStore OSD on a sparse 4 GiB file, all on loopback, all in one temporary directory, with an
 * RBD pool ready to use. About 10 s to start on an idle machine (twice that on a busy one) and
 * 0.5 GB of memory.
 *
 *   import { startCeph, type CephCluster } from '../helpers/ceph.js';
 *   let ceph: CephCluster;
 *   before(async () => { ceph = await startCeph(); });       // give the hook a timeout of a minute or so
 *   after(() => ceph.stop());                                 // kills the daemons, removes the directory
 *   …RbdDriver.open({ confPath: ceph.confPath, pool: ceph.pool, id: ceph.id })…
 *   await ceph.cli('rbd', 'ls', ceph.pool);                   // the ceph/rbd tools, pointed at this cluster
 *
 * Needs root and Debian's ceph packages (scripts/install.sh installs them); a missing tool fails
 * the test, it never skips it. The daemons run in the foreground as children of this process,
 * each started through `setpriv --pdeathsig KILL`, so the kernel kills them even when this process
 * is SIGKILLed; a normal exit kills them too ('exit' handler), and stop() does it at once.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeTempDir } from './files.js';
import { freePort } from './server.js';

export interface CephCluster {
  /** A ceph.conf naming the monitor and the client.admin keyring below. */
  readonly confPath: string;
  readonly keyringPath: string;
  /** An RBD pool (application rbd, initialised), empty at start. */
  readonly pool: string;
  /** The client id (client.admin). */
  readonly id: 'admin';
  readonly dir: string;
  /** Runs `ceph`, `rbd` or `rados` against this cluster; resolves with stdout, rejects with stderr. */
  cli(tool: 'ceph' | 'rbd' | 'rados', ...args: string[]): Promise<string>;
  /** Kills the daemons and removes the directory; safe to call more than once. */
  stop(): Promise<void>;
}

const APT_HINT = 'apt-get install ceph-mon ceph-osd ceph-mgr ceph-common (scripts/install.sh does)';
const TOOLS = ['ceph-mon', 'ceph-mgr', 'ceph-osd', 'monmaptool', 'ceph', 'rbd', 'rados', 'setpriv'];
const OSD_BYTES = 4 * 1024 ** 3;
const START_TIMEOUT_MS = 120_000;

/** Every daemon any cluster of this process started and that has not exited: killed on exit. */
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/**
 * A cephx secret as ceph-authtool makes one: type 1 (AES), creation time, 16 random bytes,
 * little-endian, base64. Made here to save a process per key.
 */
function cephxKey(): string {
  const b = Buffer.alloc(28);
  b.writeUInt16LE(1, 0);
  b.writeUInt32LE(Math.floor(Date.now() / 1000), 2);
  b.writeUInt32LE(0, 6);
  b.writeUInt16LE(16, 10);
  randomBytes(16).copy(b, 12);
  return b.toString('base64');
}

function keyringEntry(name: string, key: string, caps: Record<string, string>): string {
  return [`[${name}]`, `\tkey = ${key}`, ...Object.entries(caps).map(([k, v]) => `\tcaps ${k} = "${v}"`), ''].join('\n');
}

/**
 * Removes the directories of clusters whose test process was killed before its after hook ran
 * (their daemons died with it): a BlueStore file keeps a few hundred MB each.
 */
async function removeAbandoned(root: string): Promise<void> {
  for (const name of await fs.readdir(root).catch(() => [] as string[])) {
    if (!name.startsWith('prestage-ceph-')) continue;
    const pid = Number(await fs.readFile(join(root, name, 'owner.pid'), 'utf8').catch(() => 'NaN'));
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      process.kill(pid, 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') await fs.rm(join(root, name), { recursive: true, force: true });
    }
  }
}

export interface CephOptions {
  /** The RBD pool made at start (default prestage). */
  readonly pool?: string;
  /**
   * How long the OSD keeps the watch of a client that stopped pinging (`osd client watch
   * timeout`, Ceph's default 30 s): a client killed with an image open keeps it "open" that long,
   * and a removal waits for it. Shorter makes crash tests quicker; live clients ping every 5 s.
   */
  readonly watchTimeoutSec?: number;
}

export async function startCeph(opts: CephOptions = {}): Promise<CephCluster> {
  for (const tool of TOOLS) {
    if (spawnSync('bash', ['-c', `command -v ${tool}`]).status !== 0) assert.fail(`${tool} is required for the RBD tests: ${APT_HINT}`);
  }
  const t0 = Date.now();
  await removeAbandoned(process.env.PRESTAGE_TEST_TMP ?? tmpdir());
  const dir = await makeTempDir('prestage-ceph-');
  await fs.writeFile(join(dir, 'owner.pid'), String(process.pid));
  const pool = opts.pool ?? 'prestage';
  const conf = join(dir, 'ceph.conf');
  const keyringPath = join(dir, 'client.admin.keyring');
  const daemonKeyring = join(dir, 'daemons.keyring');
  const children = new Set<ChildProcess>();
  let stopped: Promise<void> | undefined;

  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      // A throwaway cluster needs no clean shutdown: SIGKILL is instant and leaves nothing we keep.
      await Promise.all(
        [...children].map(async (child) => {
          if (child.exitCode === null && child.signalCode === null) {
            const exited = once(child, 'exit');
            child.kill('SIGKILL');
            await exited;
          }
        }),
      );
      await fs.rm(dir, { recursive: true, force: true });
    })());

  /** Every process this cluster started, tools included, so that stop() leaves none behind. */
  const track = (child: ChildProcess): void => {
    children.add(child);
    live.add(child);
    child.on('exit', () => {
      live.delete(child);
      children.delete(child);
    });
  };

  const run = (tool: string, args: readonly string[], timeoutMs = 60_000): Promise<string> =>
    new Promise((resolve, reject) => {
      if (stopped) return reject(new Error(`${tool}: the test Ceph cluster is stopped`));
      const child = execFile(tool, args, { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`${tool} ${args.join(' ')}: ${err.message.split('\n')[0]}\n${stderr.trim()}`, { cause: err }));
        else resolve(stdout);
      });
      track(child);
    });

  const cli = (tool: 'ceph' | 'rbd' | 'rados', ...args: string[]): Promise<string> => run(tool, ['-c', conf, '--id', 'admin', ...args]);

  const daemon = async (bin: string, id: string): Promise<void> => {
    const out = openSync(join(dir, 'log', `${bin}.${id}.out`), 'a');
    try {
      const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', bin, '-c', conf, '-i', id, '-f'], { stdio: ['ignore', out, out] });
      track(child);
      await once(child, 'spawn');
    } finally {
      closeSync(out);
    }
  };

  /** What went wrong, from the daemons' own words: the end of each log. */
  const logTails = async (): Promise<string> => {
    const logs = await fs.readdir(join(dir, 'log')).catch(() => [] as string[]);
    return logs
      .map((n) => {
        const lines = readFileSync(join(dir, 'log', n), 'utf8').trimEnd().split('\n');
        return `--- ${n}\n${lines.slice(-15).join('\n')}`;
      })
      .join('\n');
  };

  try {
    const port = await freePort();
    const fsid = randomUUID();
    const osdUuid = randomUUID();
    for (const sub of ['mon', 'mgr', 'osd', 'run', 'log']) await fs.mkdir(join(dir, sub));
    const admin = keyringEntry('client.admin', cephxKey(), { mon: 'allow *', osd: 'allow *', mgr: 'allow *', mds: 'allow *' });
    await fs.writeFile(keyringPath, admin, { mode: 0o600 });
    // Every daemon's key goes into the mon's initial keyring, which `ceph-mon --mkfs` imports with
    // its caps: the OSD's key is known to the cluster before `ceph-osd --mkfs` runs (the same as a
    // `ceph auth add` first, without another `ceph` process).
    await fs.writeFile(
      daemonKeyring,
      [
        keyringEntry('mon.', cephxKey(), { mon: 'allow *' }),
        admin,
        keyringEntry('mgr.x', cephxKey(), { mon: 'allow profile mgr', osd: 'allow *', mds: 'allow *' }),
        keyringEntry('osd.0', cephxKey(), { mon: 'allow profile osd', mgr: 'allow profile osd', osd: 'allow *' }),
      ].join('\n'),
      { mode: 0o600 },
    );
    await fs.writeFile(
      conf,
      `[global]
fsid = ${fsid}
mon host = [v2:127.0.0.1:${port}]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
keyring = ${keyringPath}
run dir = ${join(dir, 'run')}
admin socket = ${join(dir, 'run', '$name.asok')}
log file = ${join(dir, 'log', '$name.log')}
# One OSD: one copy of everything, placed across OSDs rather than hosts.
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd crush chooseleaf type = 0
osd pool default pg autoscale mode = off
mon allow pool delete = true
# Health warnings that say only "this is a test cluster" (or "the machine's disk is well used").
mon warn on pool no redundancy = false
mon data avail warn = 1
auth allow insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
# State reaches the mon within a second instead of five: health settles sooner.
mgr stats period = 1
osd mon report interval = 1
# An idle test cluster need not batch map changes for a second: snapshots, pools and quotas
# (each a new OSD map) take effect in a tenth of that.
paxos propose interval = 0.1

[mon]
keyring = ${daemonKeyring}
mon data = ${join(dir, 'mon')}

[mgr]
keyring = ${daemonKeyring}
mgr data = ${join(dir, 'mgr')}

[osd]
keyring = ${daemonKeyring}
osd data = ${join(dir, 'osd')}
osd objectstore = bluestore
# The block file must lie outside the OSD's data directory (mkfs refuses it inside).
bluestore block path = ${join(dir, 'block')}
bluestore block create = true
bluestore block size = ${OSD_BYTES}
bluestore fsck on mkfs = false
osd memory target = 1073741824
${opts.watchTimeoutSec === undefined ? '' : `osd client watch timeout = ${opts.watchTimeoutSec}\n`}`,
    );
    const monmap = join(dir, 'monmap');
    await run('monmaptool', ['--create', '--addv', 'a', `[v2:127.0.0.1:${port}]`, '--fsid', fsid, monmap]);
    await run('ceph-mon', ['-c', conf, '--mkfs', '-i', 'a', '--monmap', monmap, '--keyring', daemonKeyring]);
    await daemon('ceph-mon', 'a');
    await daemon('ceph-mgr', 'x');
    // The OSD's id, its mkfs and the pool do not depend on each other: all at once.
    await Promise.all([
      cli('ceph', 'osd', 'new', osdUuid, '0'),
      run('ceph-osd', ['-c', conf, '-i', '0', '--mkfs', '--osd-uuid', osdUuid]),
      cli('ceph', 'osd', 'pool', 'create', pool, '8'),
    ]);
    await daemon('ceph-osd', '0');
    // `rbd pool init` writes to the pool, so it returns once the OSD is up and the PGs active.
    await run('rbd', ['-c', conf, '--id', 'admin', 'pool', 'init', pool], START_TIMEOUT_MS);
    // Healthy, and the pool's usage known to the mgr: until then `ceph df` and `osd pool
    // get-quota` do not know the pool, and the driver's free space would have no answer.
    const deadline = t0 + START_TIMEOUT_MS;
    for (;;) {
      const [health, df] = await Promise.all([cli('ceph', 'health', '--format', 'json'), cli('ceph', 'df', '--format', 'json')]);
      const ok = (JSON.parse(health) as { status: string }).status === 'HEALTH_OK';
      if (ok && (JSON.parse(df) as { pools: { name: string }[] }).pools.some((p) => p.name === pool)) break;
      if (Date.now() > deadline) assert.fail(`the test Ceph cluster is not ready: ${await cli('ceph', 'health', 'detail')}\n${df}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  } catch (e) {
    const tails = await logTails();
    await stop();
    assert.fail(`starting the test Ceph cluster failed: ${e instanceof Error ? e.message : String(e)}\n${tails}`);
  }
  return { confPath: conf, keyringPath, pool, id: 'admin', dir, cli, stop };
}
