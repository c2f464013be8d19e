/**
 * A throwaway single-node Ceph cluster for a bench (test/helpers/ceph.ts), stopped at cleanup
 * (after whatever reads from it: cleanup runs last registered first), on failure and on SIGINT too.
 */
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCeph, type CephCluster } from '../../test/helpers/ceph.js';
import { onCleanup } from './cleanup.js';
import { log } from './log.js';

/**
 * Removes the directories of clusters this process began to start (test/helpers/ceph.ts writes
 * owner.pid first) and did not stop. Synchronous: it runs at exit.
 */
function removeOurClusterDirs(): void {
  const root = process.env.PRESTAGE_TEST_TMP ?? tmpdir();
  let names: string[];
  try {
    names = readdirSync(root).filter((n) => n.startsWith('prestage-ceph-'));
  } catch {
    return;
  }
  for (const name of names) {
    try {
      if (readFileSync(join(root, name, 'owner.pid'), 'utf8').trim() === String(process.pid)) rmSync(join(root, name), { recursive: true, force: true });
    } catch {
      // Not ours, or gone already.
    }
  }
}

export async function startBenchCeph(): Promise<CephCluster> {
  const t0 = performance.now();
  // Registered before it starts: a SIGINT during the start still stops what did. The helper's
  // exit handler kills the daemons of a start cut short; its directory, marked with our pid, goes
  // at exit (the start may go on creating it while the cleanup runs).
  const started: { ceph?: CephCluster } = {};
  onCleanup('stop the Ceph cluster', async () => {
    await started.ceph?.stop();
  });
  process.once('exit', removeOurClusterDirs);
  const ceph = (started.ceph = await startCeph());
  log(`Ceph cluster up in ${((performance.now() - t0) / 1000).toFixed(1)} s (${ceph.dir})`);
  return ceph;
}

/** An RBD volume (`rbd:POOL/IMAGE`, as the driver names it) as qemu's rbd block driver names it. */
export function qemuRbdSpec(volume: string, ceph: Pick<CephCluster, 'confPath' | 'id'>): string {
  const m = /^rbd:([^/@]+)\/([^/@]+)$/.exec(volume);
  if (m === null) throw new Error(`not an RBD volume locator: ${volume}`);
  return `rbd:${m[1]}/${m[2]}:conf=${ceph.confPath}:id=${ceph.id}`;
}
