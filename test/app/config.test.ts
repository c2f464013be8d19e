import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compileConfig } from '../../src/app/index.js';
import { InputError } from '../../src/domain/index.js';

const MiB = 1024 * 1024;
const rate = (copyRate: string | number | undefined) => compileConfig({ dataDir: '/tmp/x', ...(copyRate !== undefined && { copyRate }) }, {}).copyRateBytesPerSec;

describe('--copy-rate', () => {
  it('is no cap unless told; 0 is no cap too', () => {
    assert.equal(rate(undefined), null);
    assert.equal(rate('0'), null);
    assert.equal(rate(0), null);
  });

  it('reads a size per second, with or without /s', () => {
    assert.equal(rate('200MiB'), 200 * MiB);
    assert.equal(rate('200MiB/s'), 200 * MiB);
    assert.equal(rate('1GiB/S'), 1024 * MiB);
    assert.equal(rate('100M'), 100e6);
  });

  it('refuses what is not a rate, or a rate below 1 MiB/s', () => {
    for (const bad of ['fast', '-1MiB', '10 parsecs', '512KiB', '1000']) {
      assert.throws(() => rate(bad), (e: unknown) => e instanceof InputError && /copyRate|copy-rate/.test(e.message), bad);
    }
  });
});

describe('--driver and the Ceph pool', () => {
  const cfg = (raw: Record<string, string>, env: NodeJS.ProcessEnv = {}) => {
    const c = compileConfig({ dataDir: '/tmp/x', ...raw }, env);
    return { driver: c.driver, ceph: c.ceph };
  };

  it('is the data directory and no Ceph unless told', () => {
    assert.deepEqual(cfg({}), { driver: 'file', ceph: null });
  });

  it('takes the ceph.conf, the pool and the user (admin unless told), from flags or the environment', () => {
    assert.deepEqual(cfg({ driver: 'rbd', cephConf: '/etc/ceph/ceph.conf', cephPool: 'prestage' }), { driver: 'rbd', ceph: { confPath: '/etc/ceph/ceph.conf', pool: 'prestage', id: 'admin' } });
    assert.deepEqual(cfg({}, { PRESTAGE_DRIVER: 'rbd', PRESTAGE_CEPH_CONF: '/c.conf', PRESTAGE_CEPH_POOL: 'p1', PRESTAGE_CEPH_ID: 'prestage' }), { driver: 'rbd', ceph: { confPath: '/c.conf', pool: 'p1', id: 'prestage' } });
    // Ceph configured, local disk the default: imports name rbd to go there.
    assert.deepEqual(cfg({ cephConf: '/c', cephPool: 'p' }), { driver: 'file', ceph: { confPath: '/c', pool: 'p', id: 'admin' } });
  });

  it('says what is missing or wrong, naming the flag', () => {
    const refuses = (raw: Record<string, string>, flag: RegExp) => assert.throws(() => cfg(raw), (e: unknown) => e instanceof InputError && flag.test(e.message), JSON.stringify(raw));
    refuses({ driver: 'rbd' }, /--driver rbd needs --ceph-conf FILE and --ceph-pool NAME/);
    refuses({ driver: 'rbd', cephPool: 'p' }, /needs --ceph-conf/);
    refuses({ driver: 'rbd', cephConf: '/c' }, /needs --ceph-pool/);
    refuses({ cephConf: '/c', cephPool: 'a/b' }, /--ceph-pool 'a\/b'/);
    refuses({ cephConf: '/c', cephPool: 'p', cephId: 'x y' }, /--ceph-id/);
    refuses({ cephId: 'x' }, /--ceph-id goes with/);
    refuses({ driver: 'nfs' }, /--driver must be/);
    refuses({ cephConf: '/c', cephPool: 'p', exporter: 'path' }, /--exporter path hands hosts local files/);
  });
});
