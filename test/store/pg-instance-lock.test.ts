/** One prestage per PostgreSQL state: a second instance is refused before it reads or changes anything. */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { UnavailableError } from '../../src/domain/index.js';
import { lockPostgresState } from '../../src/store/index.js';
import { startTestApp } from '../helpers/app.js';
import { makeTempDir } from '../helpers/files.js';
import { pgSchema } from '../helpers/postgres.js';

describe('PostgreSQL instance lock', () => {
  it('refuses a second holder of one schema, names the first, and is free again once released', async () => {
    const schema = await pgSchema();
    try {
      const first = await lockPostgresState({ url: schema.url, schema: schema.name });
      await assert.rejects(lockPostgresState({ url: schema.url, schema: schema.name }), (e: unknown) => {
        assert.ok(e instanceof UnavailableError);
        assert.match(e.message, new RegExp(`in use by another prestage \\(prestage pid ${process.pid} on `));
        return true;
      });
      const other = await pgSchema();
      const elsewhere = await lockPostgresState({ url: other.url, schema: other.name });
      await elsewhere.release();
      await other.drop();
      await first.release();
      const again = await lockPostgresState({ url: schema.url, schema: schema.name });
      await again.release();
    } finally {
      await schema.drop();
    }
  });

  it('keeps a second server off a database a first one serves, whatever its data directory', async () => {
    const schema = await pgSchema();
    const dirs = [await makeTempDir(), await makeTempDir()];
    const first = await startTestApp({ dataDir: join(dirs[0]!, 'a'), db: schema.url, dbSchema: schema.name });
    try {
      await assert.rejects(startTestApp({ dataDir: join(dirs[1]!, 'b'), db: schema.url, dbSchema: schema.name }), /in use by another prestage/);
      assert.equal((await first.call('GET', '/v1/hosts')).status, 200, 'the first keeps serving');
    } finally {
      await first.close();
      await schema.drop();
      for (const d of dirs) await rm(d, { recursive: true, force: true });
    }
  });
});
