import type { Image, SourceSpec, Store } from '../domain/index.js';

/** `name` → the newest version, `name@N` → that version; undefined when there is none. */
export function resolveSource(store: Store, spec: SourceSpec): Promise<Image | undefined> {
  return store.findImage(spec.name, spec.version);
}
