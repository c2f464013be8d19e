import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { defaultDataDir } from '../../src/app/data-dir.js';
import { resolveToken } from '../../src/cli/token-source.js';
import { makeTempDir } from '../helpers/files.js';

describe('which token the CLI sends', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  before(async () => {
    dir = await makeTempDir();
    writeFileSync(join(dir, 'admin.token'), 'pst_local\n', { mode: 0o600 });
    env = { PRESTAGE_DATA: dir };
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('sends the local admin token only to an address of this machine', () => {
    for (const url of ['http://127.0.0.1:7480', 'http://localhost:7480', 'http://[::1]:7480', 'http://127.3.4.5:1', 'http://127.1:7480']) {
      assert.equal(resolveToken({}, env, new URL(url)), 'pst_local', url);
    }
    for (const url of ['http://127.evil.example:7480', 'http://127.0.0.1.nip.io:7480', 'http://10.0.0.1:7480', 'https://prestage.example']) {
      assert.equal(resolveToken({}, env, new URL(url)), undefined, url);
    }
  });

  it('takes --token, then $PRESTAGE_TOKEN, then --token-file before the local file', () => {
    const url = new URL('http://127.0.0.1:7480');
    const file = join(dir, 'given.token');
    writeFileSync(file, ' pst_file \n');
    assert.equal(resolveToken({ token: 'pst_flag', tokenFile: file }, { ...env, PRESTAGE_TOKEN: 'pst_env' }, url), 'pst_flag');
    assert.equal(resolveToken({ tokenFile: file }, { ...env, PRESTAGE_TOKEN: 'pst_env' }, url), 'pst_env');
    assert.equal(resolveToken({ tokenFile: file }, env, url), 'pst_file');
    assert.equal(resolveToken({}, { ...env, PRESTAGE_TOKEN_FILE: file }, url), 'pst_file');
    assert.throws(() => resolveToken({ tokenFile: join(dir, 'missing') }, env, url), /--token-file .*ENOENT/);
  });

  it('an empty $PRESTAGE_DATA means the default data directory, not the working one', () => {
    assert.equal(defaultDataDir({ PRESTAGE_DATA: '' }), join(homedir(), '.local', 'share', 'prestage'));
    assert.equal(defaultDataDir({ PRESTAGE_DATA: dir }), dir);
  });
});
