import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import ts from 'typescript';

const DOMAIN = resolve(import.meta.dirname, '../../src/domain');

/** Every module a source text names: imports (type-only too), re-exports, dynamic import(), require(), and triple-slash type references. */
function specifiers(text: string): string[] {
  const info = ts.preProcessFile(text, true, true);
  return [...info.importedFiles, ...info.typeReferenceDirectives, ...info.referencedFiles].map((f) => f.fileName);
}

/** Why `spec`, named in `file`, is not one of the domain's own files; undefined when it is. */
function foreign(file: string, spec: string): string | undefined {
  if (!spec.startsWith('./') && !spec.startsWith('../')) return `imports '${spec}' (not a file of src/domain)`;
  const target = resolve(dirname(file), spec);
  return target === DOMAIN || target.startsWith(DOMAIN + sep) ? undefined : `imports '${spec}', outside src/domain`;
}

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sourceFiles(path)));
    else if (/\.[cm]?[jt]sx?$/.test(e.name)) out.push(path);
  }
  return out;
}

describe('the domain is pure', () => {
  it('the check sees every way of naming a module', () => {
    const text = [
      '/// <reference types="node" />',
      "import { Type } from '@sinclair/typebox';",
      "import type { Logger } from 'pino';",
      "export * from 'yaml';",
      "import { randomBytes } from 'node:crypto';",
      "const m = await import('fastify');",
      "const k = require('kysely');",
      "import { x } from './errors.js';",
      "import { y } from '../service/index.js';",
    ].join('\n');
    const file = join(DOMAIN, 'example.ts');
    const problems = specifiers(text).map((s) => foreign(file, s)).filter((p) => p !== undefined);
    assert.equal(problems.length, 8, problems.join('\n'));
  });

  it('every file under src/domain imports only files of src/domain: no packages, no node: built-ins, nothing from the edges', async () => {
    const files = await sourceFiles(DOMAIN);
    assert.ok(files.length >= 10, `found only ${files.length} files under ${DOMAIN}`);
    const problems: string[] = [];
    for (const file of files) {
      for (const spec of specifiers(await readFile(file, 'utf8'))) {
        const why = foreign(file, spec);
        if (why !== undefined) problems.push(`${relative(process.cwd(), file)} ${why}`);
      }
    }
    assert.deepEqual(problems, []);
  });
});
