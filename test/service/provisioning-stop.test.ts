// Stopping the server while provisions wait for copies: each waiter fails at once with a 503
// saying the server is stopping (not a hang until its copy or its timeout, not a 500), new
// provisions are refused the same way, and the service lets go of the replenisher.
// The service part runs on a real store and file driver whose copies are held until the test
// lets them go, so "waiting" is observed, not timed; the app part stops a real app while a
// provision waits for a slow cold copy (a big sparse image, read whole to be verified).
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { UnavailableError, newId, type Image, type Store, type VolumeDriver } from '../../src/domain/index.js';
import { FileDriver } from '../../src/drivers/index.js';
import { LocalPathExporter } from '../../src/exporters/index.js';
import { Replenisher } from '../../src/pool/index.js';
import { HostService, ProvisioningService } from '../../src/service/index.js';
import { openSqliteStore } from '../../src/store/index.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { makeTempDir, waitFor, writeRandomFile, writeSparseFile } from '../helpers/files.js';

const logger = pino({ level: 'silent' });

/** The driver with every makeCopy held before it starts, until the test releases it. */
function holdingCopies(driver: VolumeDriver): { driver: VolumeDriver; held: (() => void)[] } {
  const held: (() => void)[] = [];
  const makeCopy: VolumeDriver['makeCopy'] = async (...args) => {
    await new Promise<void>((release) => held.push(release));
    return driver.makeCopy(...args);
  };
  const wrapped = new Proxy(driver, {
    get(target, key) {
      if (key === 'makeCopy') return makeCopy;
      const v: unknown = Reflect.get(target, key, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { driver: wrapped, held };
}

const isStopping = (e: unknown) => {
  assert.ok(e instanceof UnavailableError, `expected an UnavailableError, got ${String(e)}`);
  assert.equal(e.code, 'PRESTAGE_UNAVAILABLE');
  assert.match(e.message, /^the server is stopping/);
  return true;
};

describe('ProvisioningService.stop', () => {
  let dir: string;
  let store: Store;
  let fileDriver: FileDriver;

  before(async () => {
    dir = await makeTempDir('prestage-provision-stop-');
    store = await openSqliteStore({ file: join(dir, 'state.db') });
    fileDriver = await FileDriver.open({ dataDir: dir, logger });
    const file = join(dir, 'golden.raw');
    await writeRandomFile(file, 64 << 10);
    const vol = await fileDriver.importImage(file);
    const image: Image = { id: newId('img'), name: 'golden', version: 1, sha256: vol.sha256, sizeBytes: vol.sizeBytes, volume: vol.volume, state: 'ready', createdAt: new Date().toISOString(), kind: 'golden', baseImageId: null };
    await store.insertImage(image, { type: 'image.imported', subject: 'golden@1' });
    const hosts = new HostService(store, new LocalPathExporter());
    for (const id of ['h1', 'h2', 'h3']) await hosts.add({ id });
  });

  after(async () => {
    await fileDriver?.close();
    await store?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('fails every waiting provision at once, refuses new ones, and lets go of the replenisher', async () => {
    const { driver, held } = holdingCopies(fileDriver);
    const replenisher = new Replenisher({ store, driver, logger, concurrency: 1 });
    replenisher.start();
    const listeners = () => replenisher.listenerCount('copy-ready') + replenisher.listenerCount('copy-failed');
    assert.equal(listeners(), 0);
    const provisioning = new ProvisioningService({ store, driver, exporter: new LocalPathExporter(), replenisher, logger });
    assert.equal(listeners(), 2);

    // No spare: both wait, one for the copy being made (held), one for a copy asked for but without a slot.
    const settled: string[] = [];
    const first = provisioning.provision('h1', 'golden').finally(() => settled.push('h1'));
    const second = provisioning.provision('h2', 'golden').finally(() => settled.push('h2'));
    first.catch(() => undefined);
    second.catch(() => undefined);
    await waitFor('a copy to be held and two provisions waiting', () => Promise.resolve(held.length === 1 && provisioning.waitingCount() === 2));

    await provisioning.stop();
    await assert.rejects(first, isStopping);
    await assert.rejects(second, isStopping);
    assert.deepEqual(settled.sort(), ['h1', 'h2'], 'both failed without their copies being made');
    assert.equal(provisioning.waitingCount(), 0);
    assert.equal(listeners(), 0, 'no longer listens to the replenisher');

    // Refused from now on, before anything is looked up or asked of the replenisher.
    await assert.rejects(provisioning.provision('h3', 'golden'), isStopping);
    await assert.rejects(provisioning.provision('nobody', 'golden'), isStopping);
    await provisioning.stop(); // again: nothing more to do

    // The held copy finishes after the stop: it goes to nobody.
    for (const release of held) release();
    await replenisher.drain(30_000);
    for (const h of ['h1', 'h2', 'h3']) assert.equal(await store.getMapping(h), undefined, `${h} is not mapped`);
    assert.equal(replenisher.copiesInFlight().length, 0);
  });
});

describe('stopping the app while a provision waits for a cold copy', () => {
  let t: TestApp | undefined;

  after(async () => {
    await t?.close();
  });

  it('answers the waiting provision 503 PRESTAGE_UNAVAILABLE at once, before the copy in flight is drained', async () => {
    // One copy at a time, bytes copied (no clone), of 2 GiB that are read whole to verify the copy: seconds.
    t = await startTestApp({ copyConcurrency: 1, reflink: 'never' });
    const file = join(await makeTempDir(), 'big.raw');
    await writeSparseFile(file, 2 * 2 ** 30, [{ offset: 0, length: 1 << 20 }]);
    assert.equal((await t.call('POST', '/v1/images', { name: 'big', path: file })).status, 201);
    await rm(file);
    assert.equal((await t.call('POST', '/v1/hosts', { id: 'waiter' })).status, 201);

    const order: string[] = [];
    const reply = t.call<{ error: { code: string; message: string } }>('POST', '/v1/hosts/waiter/provision', { source: 'big' }).finally(() => order.push('reply'));
    const app = t.app;
    await waitFor('the cold copy to be in flight', () => Promise.resolve(app.replenisher.copiesInFlight().some((c) => c.onDemand)), 60_000, 5);
    const stopped = app.stop().then(() => order.push('stopped'));
    const r = await reply;
    assert.equal(r.status, 503, r.text);
    assert.equal(r.body.error.code, 'PRESTAGE_UNAVAILABLE');
    assert.match(r.body.error.message, /^the server is stopping/);
    await stopped;
    assert.deepEqual(order, ['reply', 'stopped'], 'the reply did not wait for the copy in flight to be drained');
    assert.equal(app.state, 'STOPPED');
  });
});
