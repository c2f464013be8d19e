import { readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { pino } from 'pino';
import { makeTempDir } from './files.js';
import { pgSchema, type PgSchema } from './postgres.js';

const schemas = new Map<string, PgSchema>();
import { PrestageApp, compileConfig, type RawConfig } from '../../src/app/index.js';

export interface TestApp {
  readonly app: PrestageApp;
  readonly dataDir: string;
  /** The admin token the first start wrote; `call` sends it unless the headers carry an authorization of their own. */
  readonly token: string;
  /** Sends a JSON request through Fastify's inject (no socket) and parses the reply. */
  call<T = unknown>(method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', url: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; body: T; text: string }>;
  close(opts?: { keepData?: boolean }): Promise<void>;
}

/**
 * A real app on a real data directory (real SQLite file, real files), without a listening socket
 * unless `listen` (then on `raw.listen`, e.g. 127.0.0.1:0, for the CLI: see `app.address`).
 */
export async function startTestApp(raw: RawConfig = {}, opts: { listen?: boolean; /** SQLite whatever PRESTAGE_TEST_DIALECT says: the test reads state.db itself. */ sqlite?: boolean } = {}): Promise<TestApp> {
  const dataDir = raw.dataDir ?? (await makeTempDir());
  // PRESTAGE_TEST_DIALECT=postgres: the same tests with the state in PostgreSQL, a schema per
  // data directory (a restart on the same directory finds its state again).
  let schema: PgSchema | undefined;
  if (process.env.PRESTAGE_TEST_DIALECT === 'postgres' && raw.db === undefined && opts.sqlite !== true) {
    schema = schemas.get(dataDir) ?? (await pgSchema());
    schemas.set(dataDir, schema);
  }
  const db = schema && { db: schema.url, dbSchema: schema.name };
  // The service tests read copies through their local path; the NBD tests ask for nbd.
  const config = compileConfig({ poolAutoCreate: false, logLevel: 'silent', drainTimeout: '30s', exporter: 'path', nbdListen: '127.0.0.1:0', importDirs: [tmpdir()], ...db, ...raw, dataDir });
  const app = new PrestageApp(config, pino({ level: process.env.PRESTAGE_TEST_LOG ?? 'silent' }));
  await app.start({ listen: opts.listen === true });
  const token = (await readFile(app.adminTokenFile, 'utf8')).trim();
  return {
    app,
    dataDir,
    token,
    async call<T>(method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', url: string, body?: unknown, headers?: Record<string, string>) {
      const res = await app.http.inject({
        method,
        url,
        ...(body !== undefined && { payload: body as object }),
        headers: { authorization: `Bearer ${token}`, ...headers },
      });
      const json = res.body.length > 0 && String(res.headers['content-type'] ?? '').startsWith('application/json');
      return { status: res.statusCode, body: (json ? res.json() : undefined) as T, text: res.body };
    },
    async close(opts = {}) {
      await app.stop();
      if (!opts.keepData && schema) {
        schemas.delete(dataDir);
        await schema.drop();
      }
      if (!opts.keepData && raw.dataDir === undefined) await rm(dataDir, { recursive: true, force: true });
    },
  };
}
