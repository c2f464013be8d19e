#!/usr/bin/env node
// Node 20's --test does not expand globs: list the test files here and hand them over.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

function walk(dir) {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.test.ts') ? [p] : [];
  });
}
// --fast: the edit-test loop, without the QEMU boots and the kill-and-restart runs.
const SLOW = ['test/e2e/boot.test.ts', 'test/e2e/rbd.test.ts', 'test/e2e/rbd-cluster.test.ts', 'test/e2e/rbd-crash.test.ts', 'test/e2e/template-boot.test.ts', 'test/e2e/crash.test.ts', 'test/e2e/crash-points.test.ts', 'test/e2e/ipxe-boot.test.ts', 'test/e2e/readme.test.ts', 'test/package/pack.test.ts', 'test/cli/demo-image.test.ts', 'test/web/dashboard.test.ts'];
// --postgres: the service tests again with the state in PostgreSQL (test/helpers/app.ts).
const POSTGRES = ['test/service/', 'test/pool/urgent-bounds.test.ts'];
const args = process.argv.slice(2);
const fast = args.includes('--fast');
const postgres = args.includes('--postgres');
const given = args.filter((a) => a !== '--fast' && a !== '--postgres');
const filters = given.length > 0 ? given : postgres ? POSTGRES : [];
const files = walk('test')
  .sort()
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .filter((f) => !fast || !SLOW.includes(f));
if (files.length === 0) {
  console.error('no test files matched', filters);
  process.exit(1);
}
const env = postgres ? { ...process.env, PRESTAGE_TEST_DIALECT: 'postgres' } : process.env;
const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', ...files], { stdio: 'inherit', env });
process.exit(r.status ?? 1);
