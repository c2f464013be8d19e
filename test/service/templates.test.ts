// Templates end to end in the service: a real GPT disk with an ext4 root made with mke2fs -d,
// built by the real tools (debugfs, e2fsck) into sealed versions, served by pools, rebuilt
// when the golden gets a new version while provisions stream in, and per-host data over HTTP.
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { copyDisk, e2fsck, extCat, extDamage, extStat, GPT, makeGptDisk, sha256 } from '../customize/fixtures.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { makeTempDir, waitFor } from '../helpers/files.js';

interface Build {
  id: string;
  state: string;
  trigger: string;
  version: number | null;
  error: string | null;
  buildMs: number | null;
  rolloverMs: number | null;
  refilledMs: number | null;
  finishedAt: string | null;
  log?: string;
}
interface Template {
  name: string;
  versions: { ref: string; sha256: string; volume: string; kind: string }[];
  latestBuild: Build | null;
}
interface Provision {
  image: string;
  copyId: string;
  outcome: string;
  access: { kind: string; path: string };
}

const b64 = (s: string) => Buffer.from(s).toString('base64');

function spec(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: 'web',
    base: 'debian',
    partition: { number: 1 },
    filesystem: 'ext',
    rebuild: 'auto',
    params: { dns: '10.1.2.3', site: 'berlin' },
    files: [
      { path: '/etc/resolv.conf', mode: 0o644, uid: 0, gid: 0, contentBase64: b64('nameserver {{dns}}\n'), substitute: true },
      { path: '/etc/site/motd', mode: 0o640, uid: 1000, gid: 27, contentBase64: b64('welcome to {{site}}\n'), substitute: true },
    ],
    remove: ['/etc/machine-id', '/var/lib/cloud/instance'],
    perHost: {
      params: { hostname: {}, address: { default: 'dhcp' } },
      metaData: 'instance-id: {{host.id}}\nlocal-hostname: {{hostname}}\n',
      userData: '#cloud-config\nfqdn: {{hostname}}.{{site}}.example\n',
    },
    ...over,
  };
}

const basic = (user: string, secret: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${secret}`).toString('base64')}` });

describe('templates', () => {
  let dir: string;
  let t: TestApp;
  let golden: string;
  let goldenSha: string;

  before(async () => {
    dir = await makeTempDir('prestage-tpl-');
    golden = makeGptDisk(dir);
    goldenSha = sha256(golden);
    t = await startTestApp({ poolAutoCreate: true, poolDefaultMin: 2, poolDefaultMax: 4 });
    assert.equal((await t.call('POST', '/v1/images', { name: 'debian', path: golden })).status, 201);
  });

  after(async () => {
    await t?.close();
  });

  const templateFile = (tpl: Template, version = tpl.versions.length) => tpl.versions[version - 1]!.volume;

  it('builds a sealed version: files with their bytes, mode and owner, removals gone, fsck clean, golden unchanged', async () => {
    const r = await t.call<{ template: Template; build: Build }>('POST', '/v1/templates', spec());
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.build.state, 'done');
    assert.equal(r.body.build.version, 1);
    const disk = templateFile(r.body.template);
    assert.equal(extCat(disk, GPT.root, '/etc/resolv.conf').toString(), 'nameserver 10.1.2.3\n', 'the symlink was replaced by the file');
    assert.equal(extCat(disk, GPT.root, '/etc/site/motd').toString(), 'welcome to berlin\n');
    const st = extStat(disk, GPT.root, '/etc/site/motd');
    assert.deepEqual([st?.mode, st?.uid, st?.gid], [0o640, 1000, 27]);
    assert.equal(extStat(disk, GPT.root, '/etc/machine-id'), undefined);
    assert.equal(extStat(disk, GPT.root, '/var/lib/cloud/instance'), undefined);
    assert.equal(extCat(disk, GPT.root, '/etc/keep').toString(), 'keep\n', 'the rest of the golden is there');
    assert.equal(e2fsck(disk, GPT.root).code, 0);
    assert.equal(sha256(golden), goldenSha);
    assert.equal(sha256(disk), r.body.template.versions[0]!.sha256);
    // Sealed: read-only like a golden image.
    const { stat } = await import('node:fs/promises');
    assert.equal((await stat(disk)).mode & 0o222, 0);
  });

  it('gives the same bytes for the same inputs: a rebuild is unchanged, the log says what ran', async () => {
    const before = (await t.call<Template>('GET', '/v1/templates/web')).body;
    const b = await t.call<Build>('POST', '/v1/templates/web/build');
    assert.equal(b.status, 201);
    assert.equal(b.body.state, 'unchanged');
    assert.equal(b.body.version, 1);
    const after = (await t.call<Template>('GET', '/v1/templates/web')).body;
    assert.deepEqual(after.versions.map((v) => v.sha256), before.versions.map((v) => v.sha256));
    const logs = await t.call<Build[]>('GET', '/v1/templates/web/builds?version=1');
    assert.equal(logs.status, 200);
    assert.match(logs.body[0]!.log ?? '', /debugfs/);
    assert.match(logs.body[0]!.log ?? '', /e2fsck/);
    assert.match(logs.body[0]!.log ?? '', /sealed read-only: sha256 [0-9a-f]{64}/);
  });

  it('is provisioned like a golden image, from its own pool of spares', async () => {
    await waitFor('two spares of web', async () => (await t.call<{ ready: number }>('GET', '/v1/pools/web')).body.ready >= 2, 30_000);
    assert.equal((await t.call('POST', '/v1/hosts', { id: 'h1', vars: { hostname: 'web-01' } })).status, 201);
    const p = await t.call<Provision>('POST', '/v1/hosts/h1/provision', { source: 'web' });
    assert.equal(p.status, 200, JSON.stringify(p.body));
    assert.equal(p.body.image, 'web@1');
    assert.equal(p.body.outcome, 'warm');
    assert.equal(extCat(p.body.access.path, GPT.root, '/etc/resolv.conf').toString(), 'nameserver 10.1.2.3\n');
  });

  it("serves each host its own per-host data, and nothing to another host's credentials", async () => {
    const key1 = (await t.call<{ secret: string }>('GET', '/v1/hosts/h1/meta-credential')).body.secret;
    assert.equal((await t.call('POST', '/v1/hosts', { id: 'h2' })).status, 201);
    const key2 = (await t.call<{ secret: string }>('GET', '/v1/hosts/h2/meta-credential')).body.secret;
    const nbdKey1 = (await t.call<{ key: string }>('GET', '/v1/hosts/h1/key')).body.key;
    const meta = await t.call('GET', '/v1/meta/h1/meta-data', undefined, basic('h1', key1));
    assert.equal(meta.status, 200);
    assert.equal(meta.text, 'instance-id: h1\nlocal-hostname: web-01\n');
    const user = await t.call('GET', '/v1/meta/h1/user-data', undefined, basic('h1', key1));
    assert.equal(user.text, '#cloud-config\nfqdn: web-01.berlin.example\n');
    for (const [why, headers] of [
      ["h2's credentials", basic('h2', key2)],
      ["h2's credential as h1", basic('h1', key2)],
      ["h1's NBD key, not its meta-data credential", basic('h1', nbdKey1)],
      ['no credentials', {}],
      ['garbage', { authorization: 'Basic !!!' }],
    ] as const) {
      const r = await t.call('GET', '/v1/meta/h1/meta-data', undefined, headers);
      assert.equal(r.status, 401, why);
      assert.doesNotMatch(r.text, /web-01/, `${why}: nothing of h1's data`);
    }
    const index = await t.call('GET', '/v1/meta/h1/', undefined, basic('h1', key1));
    assert.equal(index.status, 200, 'the seed URL itself, as cloud-init asks for it first');
    assert.deepEqual(index.text.trim().split('\n'), ['meta-data', 'user-data', 'network-config', 'vendor-data']);
    assert.equal((await t.call('GET', '/v1/meta/h1/', undefined, basic('h1', key2))).status, 401);
    // A host without a value a per-host param needs is refused before it gets a copy.
    assert.equal((await t.call('POST', '/v1/hosts', { id: 'h3' })).status, 201);
    const refused = await t.call<{ error: { code: string; message: string } }>('POST', '/v1/hosts/h3/provision', { source: 'web' });
    assert.equal(refused.status, 400, refused.text);
    assert.match(refused.body.error.message, /no value for per-host param 'hostname'.*prestage host set h3 --var hostname=VALUE/);
    assert.equal((await t.call<{ mapping: unknown }>('GET', '/v1/hosts/h3')).body.mapping, null, 'no copy handed out');
    // A host's values change what it is served, not the template.
    assert.equal((await t.call('PATCH', '/v1/hosts/h1/vars', { hostname: 'web-99' })).status, 200);
    assert.match((await t.call('GET', '/v1/meta/h1/meta-data', undefined, basic('h1', key1))).text, /local-hostname: web-99/);
  });

  it('refuses bad specs and builds that cannot work, leaving no template, version or file behind', async () => {
    const copiesBefore = (await readdir(join(t.dataDir, 'copies'))).sort();
    const imagesBefore = (await t.call<unknown[]>('GET', '/v1/images')).body.length;
    const cases: [string, Record<string, unknown>, number, RegExp][] = [
      ['an unknown field', { ...spec({ name: 'bad1' }), fils: [] }, 400, /fils/],
      ['a missing partition', spec({ name: 'bad2', partition: { number: 9 } }), 422, /partition 9/],
      ['vfat where ext was asked', spec({ name: 'bad3', partition: { label: 'cidata' } }), 422, /vfat/],
      [
        'a full filesystem',
        // 1.8 MB rendered into a 1 MiB filesystem from a spec far under the 1 MiB body limit.
        spec({ name: 'bad4', partition: { number: 4 }, remove: [], params: { dns: '10.1.2.3', site: 'berlin', fill: 'x'.repeat(60_000) }, files: [1, 2].map((n) => ({ path: `/big${n}`, mode: 0o644, uid: 0, gid: 0, contentBase64: b64('{{fill}}'.repeat(15)), substitute: true })) }),
        507,
        /full|space/i,
      ],
      ['an unknown base', spec({ name: 'bad5', base: 'nope' }), 404, /nope/],
      ['a golden image name', spec({ name: 'debian' }), 409, /golden/],
    ];
    for (const [why, body, status, message] of cases) {
      const r = await t.call<{ error: { message: string } }>('POST', '/v1/templates', body);
      assert.equal(r.status, status, `${why}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.error.message, message, why);
      const name = body.name as string;
      if (name !== 'debian') assert.equal((await t.call('GET', `/v1/templates/${name}`)).status, 404, `${why}: no template left`);
    }
    assert.equal((await t.call<unknown[]>('GET', '/v1/images')).body.length, imagesBefore, 'no version made');
    await waitFor('spares to settle', async () => ((await t.call<{ making: number }>('GET', '/v1/pools/web')).body.making === 0), 30_000);
    const copiesAfter = (await readdir(join(t.dataDir, 'copies'))).filter((f) => f.startsWith('tpl-'));
    assert.deepEqual(copiesAfter, [], 'no working copy left');
    assert.ok(copiesBefore.every((f) => !f.startsWith('tpl-')));
    assert.deepEqual(await readdir(join(t.dataDir, 'tmp')), []);
    assert.equal(sha256(golden), goldenSha);
  });

  it('rolls over on a new golden version under a stream of provisions: none fails, none after the rollover gets the old version', async () => {
    // A new golden version: the same disk with one file changed.
    const v2 = copyDisk(golden, join(dir, 'golden-v2.img'));
    extDamage(v2, GPT.root, 'rm /etc/keep');
    const hosts = Array.from({ length: 4 }, (_, i) => `roll-${i}`);
    for (const h of hosts) assert.equal((await t.call('POST', '/v1/hosts', { id: h, vars: { hostname: h } })).status, 201);
    const results: { host: string; started: number; image: string; status: number }[] = [];
    let stop = false;
    const streams = hosts.map(async (host) => {
      while (!stop) {
        const started = Date.now();
        const p = await t.call<Provision>('POST', `/v1/hosts/${host}/provision`, { source: 'web' });
        results.push({ host, started, image: p.body.image, status: p.status });
        if (p.status !== 200) continue;
        await t.call('POST', `/v1/hosts/${host}/release`);
      }
    });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await t.call('POST', '/v1/images', { name: 'debian', path: v2 })).status, 201);
    let rolled: Build | undefined;
    await waitFor(
      'the template rebuilt on debian@2',
      async () => {
        const b = (await t.call<Template>('GET', '/v1/templates/web')).body.latestBuild;
        if (b?.trigger === 'base-version' && b.state !== 'building') rolled = b;
        return rolled !== undefined;
      },
      60_000,
    );
    assert.equal(rolled?.state, 'done', rolled?.error ?? '');
    assert.equal(rolled.version, 2);
    assert.ok(rolled.rolloverMs !== null && rolled.rolloverMs >= 0);
    const done = Date.parse(rolled.finishedAt!);
    await new Promise((r) => setTimeout(r, 1500));
    stop = true;
    await Promise.all(streams);
    const failed = results.filter((r) => r.status !== 200);
    assert.deepEqual(failed, [], 'no provision failed');
    const late = results.filter((r) => r.started > done);
    assert.ok(late.length > 0, 'provisions ran after the rollover');
    assert.deepEqual(late.filter((r) => r.image !== 'web@2'), [], 'after the rollover, only the new version');
    const tpl = (await t.call<Template>('GET', '/v1/templates/web')).body;
    const disk = templateFile(tpl, 2);
    assert.equal(extStat(disk, GPT.root, '/etc/keep'), undefined, 'built on the new golden');
    assert.equal(extCat(disk, GPT.root, '/etc/resolv.conf').toString(), 'nameserver 10.1.2.3\n');
    // The host of web@1 keeps its copy until it is released.
    const h1 = await t.call<{ mapping: { source: string; imageId: string } }>('GET', '/v1/hosts/h1');
    assert.equal(h1.body.mapping.source, 'web');
    await waitFor('the pool to refill with web@2', async () => (await t.call<Template>('GET', '/v1/templates/web')).body.latestBuild?.refilledMs != null, 60_000);
    // Its versions go with the template, not one by one as images.
    const rm = await t.call<{ error: { message: string } }>('DELETE', '/v1/images/web');
    assert.equal(rm.status, 409);
    assert.match(rm.body.error.message, /is a template: remove it with prestage template rm web/);
    // A host may pin the old version: it gets a copy of web@1 made for it.
    const pinned = await t.call<Provision>('POST', '/v1/hosts/roll-0/provision', { source: 'web@1' });
    assert.equal(pinned.status, 200, JSON.stringify(pinned.body));
    assert.equal(pinned.body.image, 'web@1');
    assert.notEqual(pinned.body.outcome, 'warm', 'no spares of a pinned version were kept');
    assert.equal(extStat(pinned.body.access.path, GPT.root, '/etc/keep')?.type, 'regular', 'the old version, built on debian@1');
  });
});
