/** Short, sortable-enough ids: a prefix, the time in base 36, and 40 random bits (Web Crypto, a global of the runtime). */
export function newId(prefix: 'img' | 'c' | 'bld' | 'tpl' | 'inst'): string {
  const random = [...crypto.getRandomValues(new Uint8Array(5))].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${prefix}-${Date.now().toString(36)}${random}`;
}
