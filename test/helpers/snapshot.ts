import { readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { TestApp } from './app.js';

async function walk(dir: string, root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p, root)));
    else out.push(relative(root, p));
  }
  return out;
}

/** Every volume file under the data directory (the database files aside). */
export async function volumeFiles(dataDir: string): Promise<string[]> {
  return (await walk(dataDir, dataDir)).filter((f) => !f.startsWith('state.db')).sort();
}

/** What a user can see of the state, and the files behind it: equal before and after means nothing changed. */
export async function snapshot(t: TestApp): Promise<unknown> {
  const [images, pools, hosts, copies] = await Promise.all([
    t.call('GET', '/v1/images'),
    t.call('GET', '/v1/pools'),
    t.call('GET', '/v1/hosts'),
    t.call('GET', '/v1/copies'),
  ]);
  return { images: images.body, pools: pools.body, hosts: hosts.body, copies: copies.body, files: await volumeFiles(t.dataDir) };
}
