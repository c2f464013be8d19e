// The live replenisher and the simulator size pools the same way: for random demand histories
// and policies, the live service (real SQLite store, real file driver, real copies; the clock
// injected) settles on the target that `planPools` — the simulator's planner — gives for the same
// history, and holds exactly that many spares once idle; a lowered target is trimmed down to.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { pino } from 'pino';
import { costPolicy, newId, predictivePolicy, staticPolicy, type Image, type PoolPolicy, type Store } from '../../src/domain/index.js';
import { FileDriver } from '../../src/drivers/index.js';
import { Replenisher, advance, newForecast, observe, planPools } from '../../src/pool/index.js';
import { openSqliteStore } from '../../src/store/index.js';
import { makeTempDir, writeRandomFile } from '../helpers/files.js';

const logger = pino({ level: 'silent' });
const RUNS = Math.max(5, Math.ceil(Number(process.env.PRESTAGE_PROPERTY_RUNS ?? 40) / 4));
const T0 = Date.parse('2026-11-23T00:00:00Z');

const policyArb: fc.Arbitrary<PoolPolicy> = fc.oneof(
  fc.integer({ min: 0, max: 6 }).map((n) => staticPolicy(n, n + 4)),
  fc.record({ fill: fc.constantFrom(0.9, 0.99, 0.999), max: fc.integer({ min: 2, max: 30 }) }).map(({ fill, max }) => predictivePolicy(fill, 0, max)),
  fc.record({ hours: fc.constantFrom(0.5, 4, 48), max: fc.integer({ min: 2, max: 30 }) }).map(({ hours, max }) => costPolicy(hours, 0, max)),
);

/** Gaps between requests: bursts (0–3 s), a steady trickle (seconds to minutes) and silences (hours). */
const demandArb = fc.array(
  fc.oneof(fc.double({ min: 0, max: 3, noNaN: true }), fc.double({ min: 3, max: 600, noNaN: true }), fc.double({ min: 3600, max: 3 * 86_400, noNaN: true })),
  { minLength: 0, maxLength: 400, size: 'max' },
);

describe(`live replenisher and simulator agree (${RUNS} generated histories)`, () => {
  let dir: string;
  let store: Store;
  let driver: FileDriver;
  let image: Image;

  before(async () => {
    dir = await makeTempDir('prestage-agree-');
    store = await openSqliteStore({ file: join(dir, 'state.db') });
    driver = await FileDriver.open({ dataDir: dir, workers: 2, logger });
    await writeRandomFile(join(dir, 'g.raw'), 64 << 10);
    const vol = await driver.importImage(join(dir, 'g.raw'));
    image = { id: newId('img'), name: 'g', version: 1, sha256: vol.sha256, sizeBytes: vol.sizeBytes, volume: vol.volume, state: 'ready', createdAt: new Date(T0).toISOString(), kind: 'golden', baseImageId: null };
    await store.insertImage(image, { type: 'image.imported', subject: 'g' });
  });

  after(async () => {
    await driver?.close();
    await store?.close();
  });

  it('settles on the planner’s target for the same history and holds exactly that many spares', async () => {
    await fc.assert(
      fc.asyncProperty(policyArb, demandArb, fc.integer({ min: 0, max: 6 * 3600 }), async (policy, gaps, quietS) => {
        await store.upsertPool('g', policy, { type: 'pool.set', subject: 'g' });
        let clock = T0;
        const r = new Replenisher({ store, driver, logger, concurrency: 3, now: () => clock });
        r.start();
        // The same history, fed to the live service and to a forecaster of our own.
        const f = newForecast({ coalesceS: 1 });
        for (const gap of gaps) {
          clock += Math.round(gap * 1000);
          r.recordDemand('g');
          observe(f, clock / 1000, 1);
        }
        clock += quietS * 1000;
        // Passes until nothing changes: the target settles (a lowered one falls a few spares per pass).
        for (let i = 0; i < 400; i++) {
          r.poke(true);
          await r.whenIdle();
          const p = r.planFor('g');
          if (p && p.target === p.granted) break;
          clock += 60_000;
        }
        const live = r.planFor('g')!;
        advance(f, clock / 1000);
        const planned = planPools(clock / 1000, [{ source: 'g', policy, ready: 0, inFlight: 0, sizeBytes: image.sizeBytes, forecast: f, leadTimeS: live.leadTimeS }]).pools[0]!;
        assert.equal(live.granted, planned.granted, `${policy.kind}: live ${live.granted} (${live.reason}), planner ${planned.granted} (${planned.reason})`);
        assert.equal(live.target, live.granted);
        if (process.env.PRESTAGE_PROPERTY_LOG) console.log(policy.kind, gaps.length, live.granted, live.reason);
        const counts = await store.countCopies(image.id, 'g');
        assert.equal(counts.ready, live.target, `ready spares ${counts.ready}, target ${live.target}`);
        assert.equal(counts.making, 0);
        await r.drain(10_000);
        // The next history starts from an empty pool.
        for (const c of await store.listCopies({ state: 'ready', pool: 'g' })) {
          await store.moveCopy(c.id, 'ready', 'releasing');
          await driver.removeCopy(c.id);
          await store.moveCopy(c.id, 'releasing', 'gone');
        }
        await store.deletePool('g', { type: 'pool.removed', subject: 'g' });
      }),
      { numRuns: RUNS, seed: Number(process.env.PRESTAGE_PROPERTY_SEED ?? 20261201) },
    );
  });
});
