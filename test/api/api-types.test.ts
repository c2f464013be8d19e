/**
 * The client types (src/api/generated/openapi.ts, read through src/api/types.ts) are what the
 * served OpenAPI document says, and the document says what every route answers.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { before, describe, it } from 'node:test';
import type { OpenAPI3 } from 'openapi-typescript';
import type { RouteAccess } from '../../src/api/index.js';
import { NAMED_SCHEMAS } from '../../src/api/schemas.js';
import { GENERATED_FILE, apiTypesSource, openApiDocument } from '../../scripts/gen-api-types.js';

/** What these checks read of the document. */
interface Document {
  readonly paths: Readonly<Record<string, Readonly<Record<string, { readonly responses?: Readonly<Record<string, { readonly content?: Readonly<Record<string, unknown>> }>> }>>>>;
  readonly components?: { readonly schemas?: Readonly<Record<string, unknown>> };
}

/** Fastify's `/v1/hosts/:id` as OpenAPI writes it: `/v1/hosts/{id}`. */
const openApiPath = (url: string) => url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

/** The first line where two texts differ, to say where a stale file went wrong. */
function firstDifference(a: string, b: string): string {
  const la = a.split('\n');
  const lb = b.split('\n');
  const i = la.findIndex((line, k) => line !== lb[k]);
  const at = i === -1 ? la.length : i;
  return `line ${at + 1}: committed ${JSON.stringify(la[at] ?? '<end>')}, served ${JSON.stringify(lb[at] ?? '<end>')}`;
}

describe('API types generated from the served OpenAPI document', () => {
  let doc: OpenAPI3;
  let routes: readonly RouteAccess[];
  before(async () => {
    ({ doc, routes } = await openApiDocument());
  });

  it('the committed src/api/generated/openapi.ts is what the document generates', async () => {
    const committed = await readFile(GENERATED_FILE, 'utf8');
    const fresh = await apiTypesSource(doc);
    if (committed !== fresh) assert.fail(`src/api/generated/openapi.ts is stale: run npm run gen:api-types (${firstDifference(committed, fresh)})`);
  });

  it('every route documents its success reply', () => {
    const problems: string[] = [];
    for (const r of routes) {
      const op = (doc as unknown as Document).paths[openApiPath(r.url)]?.[r.method.toLowerCase()];
      // Every route of the API is in it; what is for browsers (the dashboard's pages) and the document itself need not be.
      if (op === undefined) {
        if (r.url.startsWith('/v1/')) problems.push(`${r.method} ${r.url}: not in the document`);
        continue;
      }
      const success = Object.entries(op.responses ?? {}).filter(([status]) => /^2\d\d$/.test(status));
      if (success.length === 0) problems.push(`${r.method} ${r.url}: no success reply documented`);
      for (const [status, reply] of success) {
        const hasBody = Object.keys(reply.content ?? {}).length > 0;
        if (!hasBody && status !== '204') problems.push(`${r.method} ${r.url}: ${status} documents no body`);
      }
    }
    assert.deepEqual(problems, []);
  });

  it('every named schema is a component under its own name (the names src/api/types.ts exports)', () => {
    const names = Object.keys(doc.components?.schemas ?? {}).sort();
    assert.deepEqual(names, NAMED_SCHEMAS.map((s) => s.$id!).sort());
  });
});
