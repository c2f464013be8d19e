import { randomBytes } from 'node:crypto';

/** Short, sortable-enough ids: a prefix, the time in base 36, and 40 random bits. */
export function newId(prefix: 'img' | 'c' | 'bld' | 'tpl'): string {
  return `${prefix}-${Date.now().toString(36)}${randomBytes(5).toString('hex')}`;
}
