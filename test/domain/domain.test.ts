import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { InputError, canMove, formatSourceSpec, parseDuration, parseSize, parseSourceSpec, staticPolicy, targetSpares } from '../../src/domain/index.js';

describe('source specs', () => {
  it('reads name and name@N', () => {
    assert.deepEqual(parseSourceSpec('ubuntu-24.04'), { name: 'ubuntu-24.04', version: null });
    assert.deepEqual(parseSourceSpec('ubuntu-24.04@2'), { name: 'ubuntu-24.04', version: 2 });
  });
  it('refuses bad names and versions with an InputError', () => {
    for (const bad of ['', 'Ubuntu', '-x', 'a b', 'x@0', 'x@', 'x@-1', 'x@1.5', 'x@@1', '../etc', 'a'.repeat(64)]) {
      assert.throws(() => parseSourceSpec(bad), InputError, bad);
    }
  });
  it('formats what it parses, for any valid spec', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,20}$/), fc.option(fc.integer({ min: 1, max: 1e6 }), { nil: null }), (name, version) => {
        assert.deepEqual(parseSourceSpec(formatSourceSpec({ name, version })), { name, version });
      }),
    );
  });
});

describe('sizes and durations', () => {
  it('parses units at the edge', () => {
    assert.equal(parseSize('4GiB'), 4 * 2 ** 30);
    assert.equal(parseSize('512m'), 512e6);
    assert.equal(parseSize(1000), 1000);
    assert.equal(parseDuration('90s'), 90_000);
    assert.equal(parseDuration('5m'), 300_000);
    assert.equal(parseDuration('250ms'), 250);
  });
  it('refuses nonsense', () => {
    for (const bad of ['', 'GiB', '4 parsecs', '-1', '1e9']) assert.throws(() => parseSize(bad), InputError, bad);
    for (const bad of ['', '90', 'soon', '-5s']) assert.throws(() => parseDuration(bad), InputError, bad);
  });
});

describe('copy state machine', () => {
  it('allows exactly the life cycle of docs/design.md', () => {
    assert.ok(canMove('making', 'ready'));
    assert.ok(canMove('ready', 'mapped'));
    assert.ok(canMove('mapped', 'releasing'));
    assert.ok(canMove('releasing', 'gone'));
    assert.ok(canMove('making', 'failed'));
    assert.ok(!canMove('making', 'mapped'), 'a copy is handed out only once it is ready');
    assert.ok(!canMove('mapped', 'ready'), 'a mapped copy never becomes a spare again');
    assert.ok(!canMove('gone', 'ready'));
    assert.ok(!canMove('failed', 'ready'), 'a failed copy is never handed out');
    assert.ok(!canMove('failed', 'mapped'), 'a failed copy is never handed out');
    assert.ok(canMove('failed', 'releasing'), "a failed copy a host still maps is released with the host");
  });
});

describe('static policy', () => {
  it('targets min and checks its bounds', () => {
    assert.equal(targetSpares(staticPolicy(3, 10)), 3);
    assert.throws(() => staticPolicy(5, 2), InputError);
    assert.throws(() => staticPolicy(-1, 2), InputError);
    assert.throws(() => staticPolicy(1.5, 2), InputError);
    assert.throws(() => staticPolicy(1, 1e9), InputError);
  });
});
