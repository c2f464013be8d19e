import type { Image, SourceSpec, Store } from '../domain/index.js';

/**
 * `name` → the newest version, `name@N` → that version; undefined when there is none. A provision
 * resolves its source by the same rule inside `Store.provisionLookup` (one query with the host and
 * its mapping): a change to this rule goes there too.
 */
export function resolveSource(store: Store, spec: SourceSpec): Promise<Image | undefined> {
  return store.findImage(spec.name, spec.version);
}
