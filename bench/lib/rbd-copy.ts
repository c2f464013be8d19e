/**
 * An RBD copy for the NBD bench, made as prestage makes one: a throwaway single-node Ceph cluster
 * (bench/lib/ceph.ts), the bench's file imported as a sealed image through the RBD driver, then a
 * clone of its snapshot (driver.makeCopy).
 */
import { join } from 'node:path';
import { RbdDriver } from '../../src/drivers/rbd/index.js';
import { qemuRbdSpec, startBenchCeph } from './ceph.js';
import { onCleanup } from './cleanup.js';
import { log } from './log.js';

export interface RbdCopy {
  readonly confPath: string;
  readonly id: string;
  readonly pool: string;
  /** The copy's locator, `rbd:POOL/copy-ID`, for RbdDriver.openVolume. */
  readonly volume: string;
  /** The same clone as qemu's rbd block driver names it. */
  readonly qemuSpec: string;
  /** A local directory for the driver's staging area (every RbdDriver.open wants one). */
  readonly stagingDir: string;
}

const COPY_ID = 'bench';

export async function makeRbdCopy(file: string, dir: string): Promise<RbdCopy> {
  const ceph = await startBenchCeph();

  const stagingDir = join(dir, 'rbd-staging');
  const driver = await RbdDriver.open({ confPath: ceph.confPath, pool: ceph.pool, id: ceph.id, stagingDir });
  onCleanup('close the RBD driver', () => driver.close());
  try {
    const ti = performance.now();
    const imported = await driver.importImage(file);
    log(`imported into ${imported.volume} in ${((performance.now() - ti) / 1000).toFixed(1)} s`);
    const made = await driver.makeCopy(imported, COPY_ID);
    const volume = driver.copyVolumeFor(COPY_ID);
    log(`copy ${volume} made (${made.method}) in ${made.durationMs.toFixed(0)} ms`);
    return { confPath: ceph.confPath, id: ceph.id, pool: ceph.pool, volume, qemuSpec: qemuRbdSpec(volume, ceph), stagingDir };
  } finally {
    await driver.close();
  }
}
