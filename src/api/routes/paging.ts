/**
 * Every list is paged: `?limit=N` (default 500, at most 5000) and `?after=CURSOR`, where the
 * cursor is the one the previous page named in its `Link: <…>; rel="next"` header. A list
 * without that header is complete. Items are ordered by a key that never changes, so a page
 * boundary stays put while items are added or removed elsewhere.
 */
import { Type } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';

export const PAGE_DEFAULT = 500;
export const PAGE_MAX = 5000;

export const PageFields = {
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: PAGE_MAX, description: `items per page (default ${PAGE_DEFAULT})` })),
  after: Type.Optional(Type.String({ maxLength: 300, description: 'the cursor from the previous page’s Link header' })),
};
export const Page = Type.Object(PageFields, { additionalProperties: false });

/** One page of `items`, ordered by `key`; sets the Link header when more follow. */
export function paged<T>(req: FastifyRequest, reply: FastifyReply, items: readonly T[], key: (t: T) => string): T[] {
  const q = req.query as { limit?: number; after?: string };
  const limit = q.limit ?? PAGE_DEFAULT;
  const keyed = items.map((item) => ({ k: key(item), item })).sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0));
  const rest = q.after === undefined ? keyed : keyed.filter((e) => e.k > q.after!);
  const page = rest.slice(0, limit);
  if (rest.length > limit) void reply.header('link', nextLink(req, { ...q, limit, after: page[page.length - 1]!.k }));
  return page.map((e) => e.item);
}

/** The Link header naming the next page: the same path and filters, with the new cursor. */
export function nextLink(req: FastifyRequest, query: Record<string, string | number | undefined>): string {
  const url = new URL(req.url, 'http://x');
  for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, String(v));
  return `<${url.pathname}${url.search}>; rel="next"`;
}

/** A key that sorts numbers in order as text. */
export const padded = (n: number) => String(n).padStart(12, '0');
