/**
 * A schema of its own in the test PostgreSQL (127.0.0.1:5432, trust auth, database `test`, or
 * $PRESTAGE_TEST_PG), dropped afterwards. Fails loudly when PostgreSQL is not there.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { openPostgresStore, type KyselyStore } from '../../src/store/index.js';

export const TEST_PG_URL = process.env.PRESTAGE_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';

export interface PgSchema {
  readonly name: string;
  readonly url: string;
  open(): Promise<KyselyStore>;
  query(text: string): Promise<void>;
  drop(): Promise<void>;
}

export async function pgSchema(): Promise<PgSchema> {
  const name = `t_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: TEST_PG_URL });
  try {
    await admin.connect();
  } catch (e) {
    assert.fail(`PostgreSQL is needed for this test at ${TEST_PG_URL} (.ci/run starts it): ${e instanceof Error ? e.message : String(e)}`);
  }
  await admin.end();
  const query = async (text: string): Promise<void> => {
    const c = new pg.Client({ connectionString: TEST_PG_URL, options: `-c search_path=${name}` });
    await c.connect();
    try {
      await c.query(text);
    } finally {
      await c.end();
    }
  };
  return {
    name,
    url: TEST_PG_URL,
    open: () => openPostgresStore({ url: TEST_PG_URL, schema: name }),
    query,
    drop: async () => {
      const c = new pg.Client({ connectionString: TEST_PG_URL });
      await c.connect();
      try {
        await c.query(`DROP SCHEMA IF EXISTS ${name} CASCADE`);
      } finally {
        await c.end();
      }
    },
  };
}
