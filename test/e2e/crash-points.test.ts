// Every named crash point (src/domain/failpoint.ts), on SQLite and on PostgreSQL: a real
// `prestage serve` is set up unarmed (mapped hosts `keep` and `rel`, spares; a template for the
// template points), restarted with the point armed (points off the set-up's path are armed from
// the start, a start fewer), driven over HTTP until it SIGKILLs itself there, restarted without
// it on the same data directory and state, and checked against every invariant
// (test/helpers/invariants.ts), and for what the crash left behind and what the event log says
// the restart undid. Each case prints what was left and the reconcile/reaping events.
import assert from 'node:assert/strict';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FAILPOINTS, type FailpointName } from '../../src/domain/failpoint.js';
import { makeGptDisk } from '../customize/fixtures.js';
import { runCrashPoint, nbdPort, type CrashCase, type CrashSources } from '../helpers/crash-harness.js';
import { makeTempDir, writeRandomFile } from '../helpers/files.js';
import { assertInvariants } from '../helpers/invariants.js';
import { pgSchema, type PgSchema } from '../helpers/postgres.js';
import { startServe, type ServeProcess } from '../helpers/server.js';

const MiB = 1 << 20;

interface Left {
  readonly copies: readonly string[];
  readonly tmp: readonly string[];
  readonly images: readonly string[];
}

/** What the crash must have left in the data directory: the test reached the point it means. */
const LEFT: Partial<Record<FailpointName, (f: Left) => void>> = {
  'import.after-temp': (f) => assert.ok(f.tmp.some((n) => n.endsWith('.import')), 'the import temporary'),
  'import.after-seal': (f) => assert.equal(f.images.length, 2, 'the sealed image of b, with no row'),
  'copy.before-ready': (f) => assert.equal(f.copies.filter((n) => n.endsWith('.raw')).length, 5, 'the finished copy, still making'),
  'release.after-unmap': (f) => assert.equal(f.copies.length, 4, "rel's copy, releasing"),
  'release.after-remove': (f) => assert.equal(f.copies.length, 3, "rel's copy removed, its row releasing"),
  'template.after-scratch': (f) => assert.ok(f.copies.some((n) => n.startsWith('bld-')), 'the working copy'),
  'template.after-seal': (f) => assert.equal(f.images.length, 4, 'a, debian, web@1 and the sealed build with no row'),
};

const started: ServeProcess[] = [];

describe('crash points: SIGKILL at every named point, restart, every invariant holds', () => {
  let src: CrashSources & { readonly dir: string };
  before(async () => {
    const dir = await makeTempDir('prestage-crashpts-src-');
    src = { dir, a: join(dir, 'a.raw'), a2: join(dir, 'a2.raw'), b: join(dir, 'b.raw'), debian: makeGptDisk(dir, 'debian.raw') };
    await writeRandomFile(src.a, 2 * MiB);
    await writeRandomFile(src.a2, 2 * MiB);
    await writeRandomFile(src.b, 1 * MiB);
  });
  after(async () => {
    for (const s of started) await s.kill('SIGKILL');
    await rm(src.dir, { recursive: true, force: true });
  });

  for (const dialect of ['sqlite', 'postgres'] as const) {
    describe(dialect, () => {
      for (const point of FAILPOINTS) {
        it(point, async (t) => {
          const dir = await makeTempDir(`prestage-crashpts-${dialect}-`);
          let schema: PgSchema | undefined;
          try {
            if (dialect === 'postgres') schema = await pgSchema();
            const db = schema ? ['--db', schema.url, '--db-schema', schema.name] : [];
            const data = join(dir, 'data');
            const args = ['--import-dir', src.dir, '--pool-min', '1', '--pool-max', '1', ...db];
            const c: CrashCase = { src, mappings: {} };
            await mkdir(join(dir, 'psk'));
            await runCrashPoint({
              point,
              c,
              serve: async (env = {}) => {
                const s = await startServe(data, args, env);
                started.push(s);
                return s;
              },
              left: async () => {
                const [copies, tmp, images] = await Promise.all(['copies', 'tmp', 'images'].map((d) => readdir(join(data, d))));
                t.diagnostic(`left: ${JSON.stringify({ copies, tmp, images })}`);
                LEFT[point]?.({ copies: copies!, tmp: tmp!, images: images! });
              },
              invariants: async (s) => assertInvariants(s, data, { mappings: c.mappings, nbdPort: await nbdPort(s), scratchDir: join(dir, 'psk') }),
              log: (m) => t.diagnostic(m),
            });
          } finally {
            await schema?.drop();
            await rm(dir, { recursive: true, force: true });
          }
        });
      }
    });
  }
});
