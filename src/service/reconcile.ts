import type { Logger } from 'pino';
import type { InstanceRecord, ReapedWork, Store, VolumeDriver } from '../domain/index.js';

/** What reconcile needs to know of the other instances sharing the state and the data directory. */
export interface Peers {
  /** The instance is gone (stopped, reaped or dead), so what it left may be removed; null: written before instances had ids. */
  isGone(instanceId: string | null): boolean;
  /** Instances other than this one that are alive. */
  othersAlive(): number;
}

/** A lone instance: everything left by anyone else is left by the dead. */
export const ALONE: Peers = { isGone: () => true, othersAlive: () => 0 };

/**
 * Removes the volumes and temporary files of a dead instance's unfinished work, once the store
 * has failed its rows (Store.reapInstance). Run by the instance that reaped it.
 */
export async function removeDeadWork(store: Store, driver: VolumeDriver, dead: InstanceRecord, work: ReapedWork, logger: Logger): Promise<void> {
  for (const id of [...work.copies, ...work.builds]) await driver.removeCopy(id);
  const temps = await driver.removeTempFiles((owner) => owner === dead.id);
  if (temps.length > 0) await store.appendEvent({ type: 'reconcile.temp-files', subject: 'tmp', data: { files: temps, instance: dead.id } });
  logger.info({ instance: dead.id, copies: work.copies.length, builds: work.builds.length, tempFiles: temps.length }, 'removed what a dead instance left');
}

export interface ReconcileReport {
  readonly interruptedCopies: number;
  readonly finishedReleases: number;
  readonly orphanCopyFiles: number;
  readonly orphanImageFiles: number;
  readonly tempFiles: number;
  readonly missingCopyVolumes: number;
  readonly missingImageVolumes: number;
  readonly interruptedBuilds: number;
}

/**
 * Brings rows and volumes back into agreement after a crash (docs/design.md, invariant 5):
 * interrupted copies are removed (the replenisher makes them again), releases are finished,
 * files with no row are deleted, rows whose volume is gone are marked failed. A mapping is
 * never dropped here: a host keeps its row even when its copy went missing.
 */
export async function reconcile(store: Store, driver: VolumeDriver, logger: Logger, peers: Peers = ALONE): Promise<ReconcileReport> {
  const log = logger.child({ phase: 'reconcile' });
  const fixed = async (type: string, subject: string, data: Record<string, unknown>, msg: string): Promise<void> => {
    log.warn({ subject, ...data }, msg);
    await store.appendEvent({ type: `reconcile.${type}`, subject, data });
  };

  let interruptedCopies = 0;
  /** Copies and builds under way on a live instance: their files are theirs, not orphans. */
  const underWay = new Set<string>();
  for (const c of await store.listCopies({ state: 'making' })) {
    if (!peers.isGone(c.owner ?? null)) {
      underWay.add(c.id);
      continue;
    }
    await driver.removeCopy(c.id);
    await store.moveCopy(c.id, 'making', 'failed', { error: 'interrupted by a restart' });
    await fixed('interrupted', c.id, { imageId: c.imageId, pool: c.pool }, 'removed a copy interrupted by a restart');
    interruptedCopies++;
  }

  let finishedReleases = 0;
  for (const c of await store.listCopies({ state: 'releasing' })) {
    await driver.removeCopy(c.id);
    await store.moveCopy(c.id, 'releasing', 'gone');
    await fixed('released', c.id, { hostId: c.hostId }, 'finished a release interrupted by a restart');
    finishedReleases++;
  }

  let missingCopyVolumes = 0;
  for (const state of ['ready', 'mapped'] as const) {
    for (const c of await store.listCopies({ state })) {
      if (await driver.volumeExists(c.volume)) continue;
      await store.moveCopy(c.id, state, 'failed', { error: 'volume missing at start' });
      await fixed('missing-volume', c.id, { state, hostId: c.hostId }, state === 'mapped' ? 'a mapped copy lost its volume; the mapping is kept' : 'a spare lost its volume');
      missingCopyVolumes++;
    }
  }

  // Files first listed, then rows: a file is an orphan unless a row says it should exist.
  const live = new Set((await Promise.all((['ready', 'mapped'] as const).map((state) => store.listCopies({ state })))).flat().map((c) => c.id));
  let orphanCopyFiles = 0;
  const builds = (await Promise.all((await store.listTemplates()).map((t) => store.listBuilds(t.name)))).flat().filter((b) => b.state === 'building');
  for (const b of builds) if (!peers.isGone(b.owner ?? null)) underWay.add(b.id);
  for (const v of await driver.listCopyVolumes()) {
    if (underWay.has(v.copyId) || (!v.partial && live.has(v.copyId))) continue;
    await driver.removeCopy(v.copyId);
    await fixed('orphan-copy', v.copyId, { volume: v.volume, partial: v.partial }, 'removed a copy file with no live row');
    orphanCopyFiles++;
  }

  const temps = await driver.removeTempFiles((owner) => peers.isGone(owner));
  if (temps.length > 0) await fixed('temp-files', 'tmp', { files: temps }, 'removed temporary files of interrupted imports');

  const images = await store.listImages();
  const imageVolumes = new Set(images.map((i) => i.volume));
  let orphanImageFiles = 0;
  // An import on a live instance links its image file before it inserts the row: only a lone instance sweeps these.
  for (const v of peers.othersAlive() === 0 ? await driver.listImageVolumes() : []) {
    if (imageVolumes.has(v)) continue;
    await driver.removeImage(v);
    await fixed('orphan-image', v, {}, 'removed an image file with no row');
    orphanImageFiles++;
  }

  let missingImageVolumes = 0;
  for (const i of images) {
    const exists = await driver.volumeExists(i.volume);
    if (exists && i.state === 'missing') {
      await store.setImageState(i.id, 'ready', { type: 'reconcile.image-back', subject: `${i.name}@${i.version}` });
    } else if (!exists && i.state !== 'missing') {
      await store.setImageState(i.id, 'missing', { type: 'reconcile.missing-image', subject: `${i.name}@${i.version}`, data: { volume: i.volume } });
      log.error({ image: `${i.name}@${i.version}`, volume: i.volume }, 'an image volume is missing; no copies of it will be made');
      missingImageVolumes++;
    }
  }

  // A build's working copy is a copy file without a row (named by the build): removed above as an orphan unless its build runs on.
  let interruptedBuilds = 0;
  for (const b of builds) {
    if (underWay.has(b.id)) continue;
    await store.updateBuild(b.id, { state: 'failed', error: 'interrupted by a restart', finishedAt: new Date().toISOString() });
    await fixed('interrupted-build', b.template, { buildId: b.id }, 'a template build was interrupted by a restart; build it again');
    interruptedBuilds++;
  }

  const report = { interruptedCopies, finishedReleases, orphanCopyFiles, orphanImageFiles, tempFiles: temps.length, missingCopyVolumes, missingImageVolumes, interruptedBuilds };
  log.info(report, 'reconciled');
  return report;
}
