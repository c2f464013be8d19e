import type { Logger } from 'pino';
import type { Store, VolumeDriver } from '../domain/index.js';

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
export async function reconcile(store: Store, driver: VolumeDriver, logger: Logger): Promise<ReconcileReport> {
  const log = logger.child({ phase: 'reconcile' });
  const fixed = async (type: string, subject: string, data: Record<string, unknown>, msg: string): Promise<void> => {
    log.warn({ subject, ...data }, msg);
    await store.appendEvent({ type: `reconcile.${type}`, subject, data });
  };

  let interruptedCopies = 0;
  for (const c of await store.listCopies({ state: 'making' })) {
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
  for (const v of await driver.listCopyVolumes()) {
    if (!v.partial && live.has(v.copyId)) continue;
    await driver.removeCopy(v.copyId);
    await fixed('orphan-copy', v.copyId, { volume: v.volume, partial: v.partial }, 'removed a copy file with no live row');
    orphanCopyFiles++;
  }

  const temps = await driver.removeTempFiles();
  if (temps.length > 0) await fixed('temp-files', 'tmp', { files: temps }, 'removed temporary files of interrupted imports');

  const images = await store.listImages();
  const imageVolumes = new Set(images.map((i) => i.volume));
  let orphanImageFiles = 0;
  for (const v of await driver.listImageVolumes()) {
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

  // A build's working copy is a copy file without a row: removed above as an orphan.
  let interruptedBuilds = 0;
  for (const t of await store.listTemplates()) {
    for (const b of await store.listBuilds(t.name)) {
      if (b.state !== 'building') continue;
      await store.updateBuild(b.id, { state: 'failed', error: 'interrupted by a restart', finishedAt: new Date().toISOString() });
      await fixed('interrupted-build', t.name, { buildId: b.id }, 'a template build was interrupted by a restart; build it again');
      interruptedBuilds++;
    }
  }

  const report = { interruptedCopies, finishedReleases, orphanCopyFiles, orphanImageFiles, tempFiles: temps.length, missingCopyVolumes, missingImageVolumes, interruptedBuilds };
  log.info(report, 'reconciled');
  return report;
}
