// Retention on a real SQLite file: prune deletes events below a horizon that only rises and
// copies gone for longer than the cutoff, and the database itself still refuses to rewrite any
// event or delete one above the horizon. Rows are seeded with raw SQL so their times can be old.
// PRESTAGE_PROPERTY_RUNS sets the number of generated logs.
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import fc from 'fast-check';
import { pino } from 'pino';
import { compileConfig } from '../../src/app/index.js';
import type { CopyState, Store } from '../../src/domain/index.js';
import { Retention } from '../../src/service/retention.js';
import { openSqliteStore } from '../../src/store/index.js';
import { startTestApp } from '../helpers/app.js';
import { makeTempDir } from '../helpers/files.js';

const RUNS = Number(process.env.PRESTAGE_PROPERTY_RUNS ?? 40);
const T0 = Date.parse('2025-03-01T00:00:00Z');
const iso = (ms: number) => new Date(ms).toISOString();
const DAY = 86_400_000;

/** A store and a second, raw connection to the same file (what "any code path" could do). */
async function openBoth(dir: string): Promise<{ store: Store; raw: BetterSqlite3.Database }> {
  const file = join(dir, 'state.db');
  const store = await openSqliteStore({ file });
  const raw = new BetterSqlite3(file);
  raw.pragma('foreign_keys = ON');
  raw.pragma('busy_timeout = 5000');
  return { store, raw };
}

function seedImage(raw: BetterSqlite3.Database): void {
  raw.prepare("INSERT INTO images (id, name, version, sha256, size_bytes, volume, state, created_at) VALUES ('i1', 'img', 1, ?, 1, '/v/i1', 'ready', ?)").run('ab'.repeat(32), iso(T0));
}

/** An event at `at`; returns its seq. */
function seedEvent(raw: BetterSqlite3.Database, at: number, type = 'test'): number {
  return Number(raw.prepare("INSERT INTO events (at, type, subject, data) VALUES (?, ?, 'test', '{}')").run(iso(at), type).lastInsertRowid);
}

function seedCopy(raw: BetterSqlite3.Database, id: string, state: CopyState, changedAt: number): void {
  raw
    .prepare("INSERT INTO copies (id, image_id, pool, state, volume, created_at, changed_at) VALUES (?, 'i1', 'img', ?, ?, ?, ?)")
    .run(id, state, `/c/${id}`, iso(changedAt - DAY), iso(changedAt));
}

const seqs = (raw: BetterSqlite3.Database) => (raw.prepare('SELECT seq FROM events ORDER BY seq').all() as { seq: number }[]).map((r) => r.seq);
const copyIds = (raw: BetterSqlite3.Database) => (raw.prepare('SELECT id FROM copies ORDER BY id').all() as { id: string }[]).map((r) => r.id);
const horizon = (raw: BetterSqlite3.Database) => (raw.prepare('SELECT before_seq FROM event_horizon').get() as { before_seq: number }).before_seq;

describe('retention (sqlite)', () => {
  let dir: string;
  let store: Store;
  let raw: BetterSqlite3.Database;

  before(async () => {
    dir = await makeTempDir('prestage-retention-');
    ({ store, raw } = await openBoth(dir));
    seedImage(raw);
  });

  after(async () => {
    raw?.close();
    await store?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('prunes exactly the old events and the copies gone before the cutoff', async () => {
    const cutoff = T0 + 10 * DAY;
    const old = [seedEvent(raw, T0), seedEvent(raw, T0 + DAY), seedEvent(raw, cutoff - 1)];
    const recent = [seedEvent(raw, cutoff), seedEvent(raw, cutoff + DAY)];
    seedCopy(raw, 'gone-old', 'gone', cutoff - 1);
    seedCopy(raw, 'gone-recent', 'gone', cutoff);
    seedCopy(raw, 'ready-old', 'ready', T0);
    seedCopy(raw, 'failed-old', 'failed', T0);
    seedCopy(raw, 'releasing-old', 'releasing', T0);
    seedCopy(raw, 'mapped-old', 'mapped', T0);
    // A gone copy that a mapping still names: deleting it would break the foreign key.
    seedCopy(raw, 'gone-mapped', 'gone', T0);
    raw.prepare("INSERT INTO hosts (id, labels, created_at) VALUES ('h1', '{}', ?), ('h2', '{}', ?)").run(iso(T0), iso(T0));
    raw.prepare("INSERT INTO mappings (host_id, copy_id, source, image_id, created_at) VALUES ('h1', 'mapped-old', 'img', 'i1', ?), ('h2', 'gone-mapped', 'img', 'i1', ?)").run(iso(T0), iso(T0));

    const pruned = await store.prune({ eventsBefore: new Date(cutoff), copiesGoneBefore: new Date(cutoff) });

    assert.deepEqual(pruned, { events: old.length, copies: 1 });
    const left = seqs(raw);
    for (const s of old) assert.ok(!left.includes(s), `old event ${s} is gone`);
    for (const s of recent) assert.ok(left.includes(s), `recent event ${s} is kept`);
    assert.equal(horizon(raw), recent[0]);
    assert.deepEqual(copyIds(raw), ['failed-old', 'gone-mapped', 'gone-recent', 'mapped-old', 'ready-old', 'releasing-old']);
    // What was deleted is on the record, after the horizon.
    const audit = (await store.listEvents({ limit: 10_000 })).filter((e) => e.type === 'retention.pruned');
    assert.equal(audit.length, 1);
    assert.deepEqual([audit[0]!.data.events, audit[0]!.data.copies, audit[0]!.data.eventsBeforeSeq], [3, 1, recent[0]]);
  });

  it('still refuses to rewrite any event or to delete one at or above the horizon', () => {
    const h = horizon(raw);
    const newest = seedEvent(raw, Date.now());
    assert.throws(() => raw.prepare('DELETE FROM events WHERE seq = ?').run(newest), /append-only/);
    assert.throws(() => raw.prepare('DELETE FROM events WHERE seq = ?').run(h), /append-only/, 'the horizon itself is kept');
    assert.throws(() => raw.prepare('DELETE FROM events').run(), /append-only/);
    assert.throws(() => raw.prepare("UPDATE events SET type = 'x' WHERE seq = ?").run(newest), /append-only/);
    assert.throws(() => raw.prepare("UPDATE events SET at = '1970-01-01T00:00:00.000Z'").run(), /append-only/, 'no backdating to slip under the cutoff');
    // Nor can the horizon be moved down or removed to get at recent events.
    assert.throws(() => raw.prepare('UPDATE event_horizon SET before_seq = 0').run(), /only rises/);
    assert.throws(() => raw.prepare('DELETE FROM event_horizon').run(), /only rises/);
    assert.throws(() => raw.prepare('INSERT INTO event_horizon (id, before_seq) VALUES (2, 0)').run(), /CHECK|UNIQUE|constraint/i);
    assert.ok(seqs(raw).includes(newest));
    assert.equal(horizon(raw), h);
  });

  it('never lowers the horizon: an older cutoff deletes nothing more', async () => {
    const h = horizon(raw);
    const before = seqs(raw);
    const pruned = await store.prune({ eventsBefore: new Date(T0), copiesGoneBefore: new Date(T0) });
    assert.deepEqual(pruned, { events: 0, copies: 0 });
    assert.equal(horizon(raw), h);
    assert.deepEqual(seqs(raw), before, 'and no audit event for nothing');
  });

  it('prunes every event when none is recent, and keeps the next one', async () => {
    const d = await makeTempDir('prestage-retention-');
    const both = await openBoth(d);
    try {
      const all = [seedEvent(both.raw, T0), seedEvent(both.raw, T0 + 1)];
      const pruned = await both.store.prune({ eventsBefore: new Date(T0 + DAY), copiesGoneBefore: new Date(T0) });
      assert.deepEqual(pruned, { events: all.length, copies: 0 });
      assert.equal(horizon(both.raw), all[1]! + 1);
      // The audit event came after: it is above the horizon, protected like any other.
      const [audit] = seqs(both.raw);
      assert.ok(audit! > all[1]!);
      assert.throws(() => both.raw.prepare('DELETE FROM events WHERE seq = ?').run(audit), /append-only/);
    } finally {
      both.raw.close();
      await both.store.close();
      await rm(d, { recursive: true, force: true });
    }
  });

  it('stamps copies with the time of their last state change', async () => {
    const now = Date.now();
    await store.insertCopy({ id: 'fresh', imageId: 'i1', pool: 'img', state: 'making', volume: '/c/fresh', method: null, hostId: null, error: null, createdAt: iso(T0), readyAt: null, copyMs: null });
    raw.prepare("UPDATE copies SET changed_at = ? WHERE id = 'fresh'").run(iso(T0));
    assert.equal(await store.moveCopy('fresh', 'making', 'failed', { error: 'x' }), true);
    assert.equal(await store.moveCopy('fresh', 'failed', 'gone'), true);
    const changed = Date.parse((raw.prepare("SELECT changed_at FROM copies WHERE id = 'fresh'").get() as { changed_at: string }).changed_at);
    assert.ok(changed >= now, 'it went gone now, not when it was made');
    // Gone just now: a cutoff a day back keeps it.
    await store.prune({ eventsBefore: new Date(T0), copiesGoneBefore: new Date(now - DAY) });
    assert.ok(copyIds(raw).includes('fresh'));
  });
});

/** Events with times in a small range (so some equal the cutoff), and copies in every state. */
const logArb = fc.record({
  times: fc.array(fc.integer({ min: 0, max: 40 }), { maxLength: 60 }),
  cutoff: fc.integer({ min: -1, max: 41 }),
  copies: fc.array(fc.record({ state: fc.constantFrom<CopyState>('making', 'ready', 'mapped', 'releasing', 'gone', 'failed'), changed: fc.integer({ min: 0, max: 40 }) }), { maxLength: 20 }),
  sorted: fc.boolean(),
});

describe(`retention property (${RUNS} generated logs)`, () => {
  it('keeps every event at or after the cutoff; with times in order, none before it; only old gone copies go', async () => {
    await fc.assert(
      fc.asyncProperty(logArb, async ({ times, cutoff, copies, sorted }) => {
        const d = await makeTempDir('prestage-retention-prop-');
        const { store, raw } = await openBoth(d);
        try {
          seedImage(raw);
          // Times as the clock gave them: in order, or (a clock stepped back) in any order.
          const at = (sorted ? [...times].sort((a, b) => a - b) : times).map((t) => T0 + t * 1000);
          const events = at.map((t) => ({ seq: seedEvent(raw, t), at: t }));
          copies.forEach((c, i) => seedCopy(raw, `c${i}`, c.state, T0 + c.changed * 1000));
          const cut = T0 + cutoff * 1000;

          const pruned = await store.prune({ eventsBefore: new Date(cut), copiesGoneBefore: new Date(cut) });

          const left = new Set(seqs(raw));
          const kept = events.filter((e) => left.has(e.seq));
          for (const e of events) if (e.at >= cut) assert.ok(left.has(e.seq), `event ${e.seq} at/after the cutoff is kept`);
          // Deleted: exactly those below the first recent event (all of them when none is recent).
          const firstRecent = events.find((e) => e.at >= cut)?.seq ?? Infinity;
          assert.deepEqual(kept.map((e) => e.seq), events.filter((e) => e.seq >= firstRecent).map((e) => e.seq));
          if (sorted) assert.ok(kept.every((e) => e.at >= cut), 'in order: none before the cutoff remains');
          assert.equal(pruned.events, events.length - kept.length);
          const wantCopies = copies.flatMap((c, i) => (c.state === 'gone' && T0 + c.changed * 1000 < cut ? [] : [`c${i}`])).sort();
          assert.deepEqual(copyIds(raw), wantCopies);
          assert.equal(pruned.copies, copies.length - wantCopies.length);
        } finally {
          raw.close();
          await store.close();
          await rm(d, { recursive: true, force: true });
        }
      }),
      { numRuns: RUNS, ...(process.env.PRESTAGE_PROPERTY_SEED !== undefined && { seed: Number(process.env.PRESTAGE_PROPERTY_SEED), path: process.env.PRESTAGE_PROPERTY_PATH, endOnFailure: true }) },
    );
  });
});

describe('retention in the app', () => {
  it('is 30 days unless told, and at least a minute', () => {
    assert.equal(compileConfig({ dataDir: '/tmp/x' }, {}).retentionMs, 30 * DAY);
    assert.equal(compileConfig({ dataDir: '/tmp/x', retention: '12h' }, {}).retentionMs, 12 * 3_600_000);
    assert.throws(() => compileConfig({ dataDir: '/tmp/x', retention: '0s' }, {}), /at least a minute/);
    assert.throws(() => compileConfig({ dataDir: '/tmp/x', retention: 'soon' }, {}), /duration/);
  });

  it('prunes at start, and logs a failed run instead of throwing', async () => {
    const dataDir = await makeTempDir('prestage-retention-app-');
    const seeded = await openBoth(dataDir);
    const old = seedEvent(seeded.raw, T0);
    seeded.raw.close();
    await seeded.store.close();
    const t = await startTestApp({ dataDir, retention: '1d' }, { sqlite: true }); // seeded through state.db
    try {
      const events = await t.app.store.listEvents({ limit: 10_000 });
      assert.ok(!events.some((e) => e.seq === old), 'the old event went at start');
      assert.equal(events.filter((e) => e.type === 'retention.pruned').length, 1);
    } finally {
      await t.close();
      await rm(dataDir, { recursive: true, force: true });
    }

    const errors: unknown[] = [];
    const logger = pino({ level: 'error' }, { write: (line: string) => void errors.push(JSON.parse(line)) });
    const failing = { prune: () => Promise.reject(new Error('disk I/O error')) } as unknown as Store;
    const r = new Retention({ store: failing, retentionMs: DAY, logger, everyMs: 60_000 });
    await r.start();
    assert.equal(await r.runOnce(), undefined);
    await r.stop();
    assert.equal(errors.length, 2);
    assert.match(JSON.stringify(errors[0]), /disk I\/O error/);
  });
});
