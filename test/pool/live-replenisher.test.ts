// The live replenisher sizes pools with the planner the simulator runs: predictive targets
// from recorded demand, a storage budget split across pools, pre-warm events, and demand
// history that survives a restart. Real store (SQLite file) and real file driver; the clock
// is the replenisher's own, moved by the test, because forecasts move in 5-minute bins.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { newId, predictivePolicy, staticPolicy, type Image, type Store } from '../../src/domain/index.js';
import { FileDriver } from '../../src/drivers/index.js';
import { Replenisher, advance, forecastDemand, newForecast, observe, planPools } from '../../src/pool/index.js';
import { openSqliteStore } from '../../src/store/index.js';
import { makeTempDir, writeRandomFile } from '../helpers/files.js';

const logger = pino({ level: 'silent' });
const T0 = Date.parse('2026-11-23T00:00:00Z'); // a Monday
const ev = (type: string, subject: string) => ({ type, subject });

describe('live replenisher with the planner', () => {
  let dir: string;
  let store: Store;
  let driver: FileDriver;
  let clock = T0;
  const images: Record<string, Image> = {};

  before(async () => {
    dir = await makeTempDir('prestage-live-');
    store = await openSqliteStore({ file: join(dir, 'state.db') });
    driver = await FileDriver.open({ dataDir: dir, workers: 2, logger });
    for (const name of ['busy', 'quiet']) {
      await writeRandomFile(join(dir, `${name}.raw`), 256 << 10);
      const vol = await driver.importImage(join(dir, `${name}.raw`));
      const image: Image = { id: newId('img'), name, version: 1, sha256: vol.sha256, sizeBytes: vol.sizeBytes, volume: vol.volume, state: 'ready', createdAt: new Date(T0).toISOString(), kind: 'golden', baseImageId: null };
      await store.insertImage(image, ev('image.imported', name));
      images[name] = image;
    }
  });

  after(async () => {
    await driver?.close();
    await store?.close();
  });

  const make = (budget: Parameters<typeof planPools>[2] extends infer O ? (O extends { budget?: infer B } ? B : never) : never = null) =>
    new Replenisher({ store, driver, logger, concurrency: 4, now: () => clock, budget });

  /** Feeds a steady demand of one request every `everyS` seconds for `hours`, moving the clock. */
  function feed(r: Replenisher, source: string, everyS: number, hours: number): void {
    const end = clock + hours * 3_600_000;
    for (; clock < end; clock += everyS * 1000) r.recordDemand(source);
  }

  it('a predictive pool holds what the planner says for its recorded demand, the same number the simulator would use', async () => {
    await store.upsertPool('busy', predictivePolicy(0.99, 0, 200), ev('pool.set', 'busy'));
    const r = make();
    r.start();
    feed(r, 'busy', 10, 6);
    r.poke(true);
    await r.whenIdle();
    const plan = r.planFor('busy');
    assert.ok(plan, 'the pool was planned');
    assert.equal(plan.policy, 'predictive');
    assert.ok(plan.requestsPerS > 0.08 && plan.requestsPerS < 0.12, `forecast ${plan.requestsPerS} req/s for one every 10 s`);
    assert.match(plan.reason, /fill 99 % needs \d+|min \d+/);
    // The same planner on the same history (rebuilt here) gives the same target.
    const f = newForecast({ coalesceS: 1 });
    for (let t = T0; t < T0 + 6 * 3_600_000; t += 10_000) observe(f, t / 1000, 1);
    advance(f, clock / 1000);
    const again = planPools(clock / 1000, [{ source: 'busy', policy: predictivePolicy(0.99, 0, 200), ready: 0, inFlight: 0, sizeBytes: 1, forecast: f, leadTimeS: plan.leadTimeS }]);
    // (The live plan may still hold a higher target falling from the first pass's guess of a slower copy.)
    assert.equal(plan.granted, again.targets.busy);
    assert.ok(forecastDemand(f, clock / 1000, plan.leadTimeS).requestsPerS > 0);
    // And it made them: ready + in flight is the target it holds.
    assert.equal((await store.countCopies(images.busy!.id, 'busy')).ready, plan.target);
    await r.drain(10_000);
  });

  it('keeps demand history across a restart', async () => {
    const before = await store.loadPoolForecasts();
    assert.ok(before.has('busy'), 'saved at drain');
    const r = make();
    await r.loadDemand();
    r.start();
    r.poke(true);
    await r.whenIdle();
    assert.ok((r.planFor('busy')?.requestsPerS ?? 0) > 0.08, 'the new process forecasts from the old history');
    await r.drain(10_000);
  });

  it('splits a storage budget where spares buy the most warm requests, and says so', async () => {
    await store.upsertPool('busy', predictivePolicy(0.9999, 0, 200), ev('pool.set', 'busy'));
    await store.upsertPool('quiet', predictivePolicy(0.9999, 0, 200), ev('pool.set', 'quiet'));
    const r = make({ kind: 'copies', copies: 3 });
    await r.loadDemand();
    r.start();
    feed(r, 'quiet', 600, 6);
    feed(r, 'busy', 2, 1);
    r.poke(true);
    await r.whenIdle();
    const busy = r.planFor('busy')!;
    const quiet = r.planFor('quiet')!;
    assert.ok(busy.wanted + quiet.wanted > 3, `the targets exceed the budget (${busy.wanted} + ${quiet.wanted})`);
    assert.ok(busy.target + quiet.target <= 3, 'within the budget');
    assert.ok(busy.target >= quiet.target, 'the busy pool gets the spares');
    assert.match(`${busy.reason} ${quiet.reason}`, /budget/);
    assert.ok(busy.lastSpareHitsPerHour !== null);
    await r.drain(10_000);
  });

  it('raises a target ahead of a pre-warm event and drops it after', async () => {
    await store.upsertPool('quiet', staticPolicy(1, 40), ev('pool.set', 'quiet'), ['20@09:00/mon-fri']);
    await store.upsertPool('busy', staticPolicy(0, 0), ev('pool.set', 'busy'));
    const r = make();
    await r.loadDemand();
    r.start();
    const at = (hhmm: string) => Date.parse(`2026-11-24T${hhmm}:00Z`); // a Tuesday
    const targetAt = async (ms: number) => {
      clock = ms;
      r.poke(true);
      await r.whenIdle();
      return r.planFor('quiet')!;
    };
    assert.equal((await targetAt(at('06:00'))).target, 1, 'hours before: the static min');
    // The head start: the copy time for 20 copies at 4 at once, plus a 5-minute margin.
    assert.equal((await targetAt(at('08:50'))).target, 1, 'ten minutes before: not yet');
    const before = await targetAt(at('08:57'));
    assert.equal(before.target, 21, `three minutes before 09:00: min + 20 (${before.reason})`);
    assert.match(before.reason, /pre-warm for 09:00 UTC/);
    assert.equal((await store.countCopies(images.quiet!.id, 'quiet')).ready, 21, 'the copies are ready before the event');
    // After the event the target falls back a few spares at a time (10 % or 1 per 5 minutes), trimming oldest first.
    const falling = await targetAt(at('09:30'));
    assert.equal(falling.granted, 1, 'after the event the policy wants its min again');
    assert.ok(falling.target > 1 && falling.target < 21, `half an hour on, still falling: ${falling.target}`);
    assert.equal((await store.countCopies(images.quiet!.id, 'quiet')).ready, falling.target, 'spares above the falling target were trimmed');
    assert.equal((await targetAt(at('12:00'))).target, 1, 'hours after the event');
    assert.equal((await store.countCopies(images.quiet!.id, 'quiet')).ready, 1);
    await r.drain(10_000);
  });
});
