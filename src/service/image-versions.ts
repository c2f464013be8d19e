import { VersionTakenError, newId, staticPolicy, type Image, type NewEvent, type Store } from '../domain/index.js';

/** What a new version of a name is made of; the number, id and time are given here. */
export type VersionContent = Pick<Image, 'name' | 'sha256' | 'sizeBytes' | 'volume' | 'kind' | 'baseImageId'>;

/**
 * Stores `content` as the next version of its name. Two writers of one name at once: the
 * database refuses the second of a number, which then tries the next one.
 */
export async function insertNextVersion(store: Store, content: VersionContent, event: (image: Image) => NewEvent): Promise<Image> {
  for (let attempt = 0; ; attempt++) {
    const image: Image = { ...content, id: newId('img'), version: await store.nextImageVersion(content.name), state: 'ready', createdAt: new Date().toISOString() };
    try {
      await store.insertImage(image, event(image));
      return image;
    } catch (e) {
      if (e instanceof VersionTakenError && attempt < 5) continue;
      throw e;
    }
  }
}

/** A name's first version gets the default static pool, unless it has a pool or there is no default. */
export async function ensureDefaultPool(store: Store, name: string, defaults: { readonly min: number; readonly max: number } | null): Promise<void> {
  if (!defaults || (await store.getPool(name))) return;
  const { min, max } = defaults;
  await store.upsertPool(name, staticPolicy(min, max), { type: 'pool.set', subject: name, data: { min, max, reason: 'default' } });
}
