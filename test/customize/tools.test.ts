/**
 * The tool runner's failures: a missing tool named with its package (found up front or at run
 * time), a tool that hangs killed at its timeout, a non-zero exit returned as a result.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UnavailableError } from '../../src/domain/index.js';
import { requireTools, runTool, type ToolContext } from '../../src/customize/tools.js';

const context = (tools: ToolContext['tools'], timeoutMs = 10_000): ToolContext => ({ tools, cwd: process.cwd(), log: () => undefined, timeoutMs });

describe('customize: tools', () => {
  it('names every missing tool and the apt packages that bring them', async () => {
    await assert.rejects(requireTools(['debugfs', 'mcopy', 'xorriso', 'e2fsck'], ['/nonexistent']), (e: unknown) => {
      assert.ok(e instanceof UnavailableError);
      assert.equal(e.message, 'debugfs, mcopy, xorriso, e2fsck not installed: apt-get install e2fsprogs mtools xorriso');
      return true;
    });
    await assert.rejects(runTool(context(new Map([['xorriso', '/nonexistent/xorriso']])), 'xorriso', []), /xorriso is not installed: apt-get install xorriso/);
  });

  it('kills a tool that outlives its timeout, and returns a failing exit as a result', async () => {
    const started = Date.now();
    await assert.rejects(runTool(context(new Map([['debugfs', '/bin/sleep']]), 200), 'debugfs', ['10']), /debugfs did not finish within 200 ms/);
    assert.ok(Date.now() - started < 5000);
    const run = await runTool(context(new Map([['mdir', '/bin/sh']])), 'mdir', ['-c', 'echo out; echo err >&2; exit 3']);
    assert.deepEqual(run, { code: 3, stdout: 'out\n', stderr: 'err\n' });
  });
});
