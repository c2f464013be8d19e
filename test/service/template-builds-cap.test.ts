// At most `maxConcurrentBuilds` template builds run at once, however they start (apply, a new
// base version), and the rest wait their turn and then finish. The service runs on a real store
// and file driver; the customizer is a stand-in that counts the builds inside it and holds each
// one until the test lets it go, so the count is observed, not timed.
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { compileConfig } from '../../src/app/index.js';
import { UnavailableError, newId, type Customizer, type Image, type Store } from '../../src/domain/index.js';
import { FileDriver } from '../../src/drivers/index.js';
import { Replenisher } from '../../src/pool/index.js';
import { TemplateService } from '../../src/service/index.js';
import { openSqliteStore } from '../../src/store/index.js';
import { makeTempDir, waitFor, writeRandomFile } from '../helpers/files.js';

const logger = pino({ level: 'silent' });
const b64 = (s: string) => Buffer.from(s).toString('base64');

/** A template that writes one file naming it, so the customizer can tell builds apart. */
const spec = (name: string) => ({
  name,
  base: 'golden',
  filesystem: 'ext',
  rebuild: 'auto',
  params: {},
  files: [{ path: '/etc/template', mode: 0o644, uid: 0, gid: 0, contentBase64: b64(name), substitute: false }],
  remove: [],
});

/** Holds every build in `customize` until released; counts how many are inside at once. */
class HeldCustomizer implements Customizer {
  running = 0;
  maxRunning = 0;
  readonly entered: { template: string; release: () => void }[] = [];

  async customize(_disk: string, plan: Parameters<Customizer['customize']>[1]): Promise<void> {
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    try {
      await new Promise<void>((release) => this.entered.push({ template: plan.writes[0]!.content.toString(), release }));
    } finally {
      this.running--;
    }
  }

  /** Lets the held builds go one by one, each once the next has entered, until `total` have run. */
  async releaseAll(total: number, cap: number): Promise<void> {
    for (let i = 0; i < total; i++) {
      await waitFor(`build ${i + 1} of ${total} to start`, () => Promise.resolve(this.entered.length > i));
      assert.ok(this.running <= cap, `${this.running} builds at once, cap ${cap}`);
      this.entered[i]!.release();
    }
  }
}

describe('template builds: at most maxConcurrentBuilds at once', () => {
  let dir: string;
  let store: Store;
  let driver: FileDriver;
  let replenisher: Replenisher;

  const importGolden = async (version: number): Promise<Image> => {
    const file = join(dir, `golden-${version}.raw`);
    await writeRandomFile(file, 64 << 10);
    const vol = await driver.importImage(file);
    const image: Image = { id: newId('img'), name: 'golden', version, sha256: vol.sha256, sizeBytes: vol.sizeBytes, volume: vol.volume, state: 'ready', createdAt: new Date().toISOString(), kind: 'golden', baseImageId: null };
    await store.insertImage(image, { type: 'image.imported', subject: `golden@${version}` });
    return image;
  };

  const service = (customizer: Customizer, maxConcurrentBuilds?: number) =>
    new TemplateService({ store, driver, customizer, replenisher, logger, defaultPool: null, ...(maxConcurrentBuilds !== undefined && { maxConcurrentBuilds }) });

  before(async () => {
    dir = await makeTempDir('prestage-build-cap-');
    store = await openSqliteStore({ file: join(dir, 'state.db') });
    driver = await FileDriver.open({ dataDir: dir, logger });
    // Not started: these templates have no pools to fill.
    replenisher = new Replenisher({ store, driver, logger });
    await importGolden(1);
  });

  after(async () => {
    await driver?.close();
    await store?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('runs 2 of 5 applied templates at once by default, queues the rest, and finishes all 5', async () => {
    const customizer = new HeldCustomizer();
    const templates = service(customizer);
    const names = ['t1', 't2', 't3', 't4', 't5'];
    const applied = Promise.all(names.map((n) => templates.apply(spec(n))));
    await waitFor('two builds running and three waiting', () => Promise.resolve(customizer.entered.length === 2 && templates.buildSlots.waiting === 3));
    assert.deepEqual(templates.buildSlots, { size: 2, running: 2, waiting: 3 });
    // A waiting build has no row yet: what is listed as building is building.
    const listed = (await Promise.all(names.map((n) => store.listBuilds(n)))).flat();
    assert.deepEqual(listed.map((b) => b.state), ['building', 'building']);

    await customizer.releaseAll(5, 2);
    const results = await applied;
    assert.deepEqual(results.map((r) => [r.template.name, r.build.state, r.build.version]), names.map((n) => [n, 'done', 1]));
    assert.equal(customizer.maxRunning, 2);
    assert.deepEqual(customizer.entered.map((e) => e.template).sort(), names);
    assert.deepEqual(templates.buildSlots, { size: 2, running: 0, waiting: 0 });
    await templates.close(1000);
  });

  it('caps the rebuilds a new base version starts, at the number given', async () => {
    const customizer = new HeldCustomizer();
    const templates = service(customizer, 3);
    const names = ['t1', 't2', 't3', 't4', 't5'];
    await templates.baseImported(await importGolden(2));
    await waitFor('three rebuilds running', () => Promise.resolve(customizer.entered.length === 3 && templates.buildSlots.waiting === 2));
    await customizer.releaseAll(5, 3);
    await waitFor('every template rebuilt on golden@2', async () => {
      const latest = await Promise.all(names.map(async (n) => (await store.listBuilds(n))[0]));
      return latest.every((b) => b?.trigger === 'base-version' && b.state === 'done' && b.version === 2);
    });
    assert.equal(customizer.maxRunning, 3);
    await templates.close(1000);
  });

  it('does not start builds still waiting when the service closes', async () => {
    const customizer = new HeldCustomizer();
    const templates = service(customizer, 1);
    const first = templates.build('t1');
    const second = templates.build('t2');
    const rejected = assert.rejects(second, UnavailableError);
    await waitFor('the first build running', () => Promise.resolve(customizer.entered.length === 1));
    const closed = templates.close(30_000);
    customizer.entered[0]!.release();
    assert.equal((await first).state, 'unchanged');
    await rejected;
    await closed;
    assert.equal(customizer.entered.length, 1, 'the second never ran');
    assert.equal((await store.listBuilds('t2')).filter((b) => b.trigger === 'build').length, 0, 'and left no row');
  });

  it('takes the cap from `templateBuilds` / --template-builds: 2 unless told, 1 to 64', () => {
    assert.equal(compileConfig({ dataDir: '/tmp/x' }, {}).templateBuilds, 2);
    assert.equal(compileConfig({ dataDir: '/tmp/x', templateBuilds: 64 }, {}).templateBuilds, 64);
    for (const n of [0, 65, 1.5]) assert.throws(() => compileConfig({ dataDir: '/tmp/x', templateBuilds: n }, {}), /1 to 64/);
  });
});
