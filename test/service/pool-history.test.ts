// The sampler behind the dashboard's charts: what one sample records, how provisions between
// two samples are counted, and that memory stays bounded (ring per pool, pools capped).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { PoolHistory, type PoolCounts } from '../../src/service/index.js';

function harness(opts: { sampleMs?: number; keepMs?: number; maxPools?: number } = {}) {
  let now = Date.UTC(2025, 0, 1);
  let pools: PoolCounts[] = [];
  const h = new PoolHistory({ pools: () => Promise.resolve(pools), logger: pino({ level: 'silent' }), now: () => now, ...opts });
  return {
    h,
    set: (p: PoolCounts[]) => (pools = p),
    advance: (ms: number) => (now += ms),
    now: () => now,
  };
}

describe('PoolHistory', () => {
  it('records counts per sample and the provisions served between samples, with their latency', async () => {
    const t = harness({ sampleMs: 10_000 });
    t.set([{ source: 'web', ready: 4, making: 0, target: 4 }]);
    await t.h.sample();
    t.h.provisioned('web', 'warm', 0.002);
    t.h.provisioned('web', 'warm', 0.004);
    t.h.provisioned('web', 'cold', 2.5);
    t.h.provisioned('web', 'failed', 30);
    t.h.provisioned('elsewhere', 'warm', 0.001); // not a pool sampled: not kept
    t.advance(10_000);
    t.set([{ source: 'web', ready: 2, making: 2, target: 4 }]);
    await t.h.sample();
    const v = t.h.history('web', 1)!;
    assert.equal(v.sampleS, 10);
    assert.deepEqual(v.at, [t.now() / 1000 - 10, t.now() / 1000]);
    assert.deepEqual(v.ready, [4, 2]);
    assert.deepEqual(v.inFlight, [0, 2]);
    assert.deepEqual(v.target, [4, 4]);
    assert.deepEqual(v.provisions, [0, 3]);
    assert.deepEqual(v.warm, [0, 2]);
    assert.deepEqual(v.failed, [0, 1]);
    assert.equal(v.latencyMeanMs[0], null);
    assert.equal(v.latencyMaxMs[0], null);
    assert.equal(v.latencyMeanMs[1], Math.round(((2 + 4 + 2500) / 3) * 10) / 10);
    assert.equal(v.latencyMaxMs[1], 2500);
    assert.equal(t.h.history('elsewhere', 1), undefined);
  });

  it('keeps only keepMs of samples per pool, and only the asked-for hours are answered', async () => {
    const t = harness({ sampleMs: 60_000, keepMs: 3_600_000 });
    t.set([{ source: 'a', ready: 1, making: 0, target: 1 }]);
    for (let i = 0; i < 200; i++) {
      await t.h.sample();
      t.advance(60_000);
    }
    assert.equal(t.h.history('a', 24)!.at.length, 60, 'the ring holds an hour of minute samples, no more');
    const half = t.h.history('a', 0.5)!;
    assert.ok(half.at.length >= 29 && half.at.length <= 31, String(half.at.length));
    assert.ok(half.at.every((x, i) => i === 0 || x > half.at[i - 1]!), 'oldest first');
  });

  it('forgets a pool that is gone, and tracks at most maxPools', async () => {
    const t = harness({ maxPools: 2 });
    t.set(['c', 'a', 'b'].map((source) => ({ source, ready: 0, making: 0, target: 0 })));
    await t.h.sample();
    assert.ok(t.h.history('a', 1) && t.h.history('b', 1));
    assert.equal(t.h.history('c', 1), undefined, 'beyond the cap, in name order');
    t.set([{ source: 'b', ready: 0, making: 0, target: 0 }]);
    await t.h.sample();
    assert.equal(t.h.history('a', 1), undefined);
    assert.equal(t.h.history('b', 1)!.at.length, 2);
  });

  it('start samples at once and stop waits for a sample under way', async () => {
    let calls = 0;
    const h = new PoolHistory({
      pools: async () => {
        calls++;
        await new Promise((r) => setTimeout(r, 20));
        return [{ source: 'p', ready: 1, making: 0, target: 1 }];
      },
      logger: pino({ level: 'silent' }),
      sampleMs: 3_600_000,
    });
    h.start();
    await h.stop();
    assert.equal(calls, 1);
    assert.equal(h.history('p', 1)!.ready.length, 1);
  });
});
