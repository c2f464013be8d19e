/** The server's JSON log: one object per line, no key written twice in a line. */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { PrestageApp, compileConfig } from '../../src/app/index.js';
import { makeTempDir } from '../helpers/files.js';

/** The top-level keys of a JSON line as written, duplicates kept (JSON.parse would keep only the last). */
function topLevelKeys(line: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let inString = false;
  let start = -1;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') {
        inString = false;
        // A string at depth 1 followed by ':' is a key.
        if (depth === 1 && /^\s*:/.test(line.slice(i + 1))) keys.push(line.slice(start + 1, i));
      }
    } else if (c === '"') {
      inString = true;
      start = i;
    } else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
  }
  return keys;
}

describe('log lines', () => {
  it('name each field once (the NBD server names its component, the app does not again)', async () => {
    const dir = await makeTempDir();
    const out = new PassThrough();
    let text = '';
    out.setEncoding('utf8').on('data', (s: string) => (text += s));
    const config = compileConfig({ dataDir: join(dir, 'data'), listen: '127.0.0.1:0', nbdListen: '127.0.0.1:0', logLevel: 'info' }, {});
    const app = new PrestageApp(config, pino({ level: 'info' }, out));
    try {
      await app.start({ listen: false });
    } finally {
      await app.stop();
      await rm(dir, { recursive: true, force: true });
    }
    const lines = text.trim().split('\n');
    assert.ok(lines.some((l) => l.includes('"component":"nbd"')), 'the NBD server logged');
    for (const line of lines) {
      const keys = topLevelKeys(line);
      assert.deepEqual(keys.filter((k, i) => keys.indexOf(k) !== i), [], `a key twice in ${line}`);
    }
  });
});
