/**
 * On-demand copies for waiting provisions keep within the pool's max and the pool budget: a burst
 * of provisions with no spare ready is served a few copies at a time, not with one copy each at once.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { makeTempDir, writeRandomFile } from '../helpers/files.js';

const MiB = 1 << 20;

async function burst(t: TestApp, source: string, hosts: number): Promise<{ outcomes: string[]; most: number }> {
  let most = 0;
  let sampling = true;
  // Counts copies in flight for the source on every turn of the event loop while the burst runs.
  const sample = (): void => {
    if (!sampling) return;
    most = Math.max(most, t.app.replenisher.copiesInFlight().filter((c) => c.pool === source).length);
    setImmediate(sample);
  };
  sample();
  const ids = Array.from({ length: hosts }, (_, i) => `${source}-h${i}`);
  for (const id of ids) assert.equal((await t.call('POST', '/v1/hosts', { id })).status, 201);
  const replies = await Promise.all(ids.map((id) => t.call<{ outcome: string }>('POST', `/v1/hosts/${id}/provision`, { source })));
  sampling = false;
  for (const r of replies) assert.equal(r.status, 200, r.text);
  return { outcomes: replies.map((r) => r.body.outcome), most };
}

describe('on-demand copies within bounds', () => {
  let dir: string;
  before(async () => {
    dir = await makeTempDir();
    await writeRandomFile(join(dir, 'img.raw'), 8 * MiB);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("makes at most the pool's max at once for a burst of cold provisions, and serves them all", async () => {
    const t = await startTestApp({ copyConcurrency: 6 });
    try {
      assert.equal((await t.call('POST', '/v1/images', { name: 'img', path: join(dir, 'img.raw') })).status, 201);
      assert.equal((await t.call('PUT', '/v1/pools/img', { min: 0, max: 2 })).status, 200);
      const { outcomes, most } = await burst(t, 'img', 8);
      assert.equal(outcomes.length, 8);
      assert.ok(outcomes.every((o) => o === 'cold' || o === 'joined' || o === 'warm'));
      assert.ok(most >= 1 && most <= 2, `at most 2 copies of the pool in flight, saw ${most}`);
    } finally {
      await t.close();
    }
  });

  it('keeps copies in flight within a pool budget of copies', async () => {
    const t = await startTestApp({ copyConcurrency: 6, poolBudget: '3' });
    try {
      assert.equal((await t.call('POST', '/v1/images', { name: 'img', path: join(dir, 'img.raw') })).status, 201);
      assert.equal((await t.call('PUT', '/v1/pools/img', { min: 0, max: 8 })).status, 200);
      const { outcomes, most } = await burst(t, 'img', 8);
      assert.equal(outcomes.length, 8);
      assert.ok(most >= 1 && most <= 3, `at most 3 copies in flight under a budget of 3, saw ${most}`);
    } finally {
      await t.close();
    }
  });
});
