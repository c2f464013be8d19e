// The template commands and host values as an operator uses them: the `prestage` binary (a child
// process, as a person or a script runs it) against a real `prestage serve`, on a GPT golden
// image with an ext4 root built in the test (mke2fs -d), a YAML spec file with a `from:` file
// next to it, and the real build tools (debugfs, e2fsck). Outputs, exit codes and messages are
// what is checked; what the build wrote is read back from the template's disk with debugfs.
import assert from 'node:assert/strict';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EXIT_CODES } from '../../src/cli/exit-codes.js';
import { copyDisk, e2fsck, extCat, extDamage, extStat, GPT, makeGptDisk, sha256 } from '../customize/fixtures.js';
import { makeTempDir, waitFor } from '../helpers/files.js';
import { startServe, type ServeProcess } from '../helpers/server.js';
import { assertOneErrorLine, parse, prestage, type Run } from '../helpers/cli-run.js';

interface Build {
  id: string;
  state: string;
  trigger: string;
  version: number | null;
  buildMs: number | null;
  rolloverMs: number | null;
  refilledMs: number | null;
  log?: string;
}
interface Template {
  name: string;
  base: string;
  rebuild: string;
  specSha256: string;
  versions: { ref: string; sha256: string; volume: string }[];
  latestBuild: Build | null;
}
interface Host {
  id: string;
  vars: Record<string, string>;
}

const SPEC = `# A template as an operator writes it.
name: web
base: debian
partition: 1
params:
  dns: 10.1.2.3
files:
  - path: /etc/resolv.conf
    content: |
      nameserver {{dns}}
  - path: /etc/motd
    from: motd.txt
    mode: "0640"
    owner: 1000
    group: 27
remove:
  - /etc/machine-id
per-host:
  params:
    hostname: {}
    rack: {default: unassigned}
  meta-data: |
    instance-id: {{host.id}}
    local-hostname: {{hostname}}
    rack: {{rack}}
`;

/** Lines of output, without the last line break. */
const lines = (s: string) => s.replace(/\n$/, '').split('\n');

describe('prestage template and host values, against a running server', () => {
  let dir: string;
  let specDir: string;
  let golden: string;
  let goldenSha: string;
  let serve: ServeProcess;
  let motd: Buffer;

  /** Runs `node bin/prestage.js --server URL ARGS` to completion in `cwd` (default: the test's folder). */
  const cli = (args: readonly string[], cwd = dir): Promise<Run> => prestage(['--server', serve.url, ...args], { cwd, env: { PRESTAGE_URL: undefined, PRESTAGE_TOKEN: serve.token } });
  const ok = async (...args: string[]) => {
    const r = await cli(args);
    assert.equal(r.code, 0, `${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
    assert.equal(r.stderr, '', `${args.join(' ')}: nothing on stderr when it is not a terminal`);
    return r.stdout;
  };
  // What the server holds is read over HTTP: each run of the CLI costs a Node start (about a second).
  const api = async <T>(path: string) => {
    const r = await serve.call<T>('GET', path);
    assert.equal(r.status, 200, `${path}: ${JSON.stringify(r.body)}`);
    return r.body;
  };
  const showJson = () => api<Template>('/v1/templates/web');
  const meta = async (host: string) => {
    const { secret } = await api<{ secret: string }>(`/v1/hosts/${host}/meta-credential`);
    const res = await fetch(`${serve.url}/v1/meta/${host}/meta-data`, { headers: { authorization: `Basic ${Buffer.from(`${host}:${secret}`).toString('base64')}` } });
    assert.equal(res.status, 200);
    return res.text();
  };

  before(async () => {
    dir = await makeTempDir('prestage-tplcli-');
    golden = makeGptDisk(dir, 'golden.img');
    goldenSha = sha256(golden);
    specDir = join(dir, 'spec');
    await mkdir(specDir);
    motd = Buffer.from(`welcome, ${Math.random().toString(36).slice(2)}\n`);
    await writeFile(join(specDir, 'web.yaml'), SPEC);
    await writeFile(join(specDir, 'motd.txt'), motd);
    serve = await startServe(join(dir, 'data'));
  });

  after(async () => {
    await serve?.kill('SIGTERM');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('applies a YAML spec whose from: file lies next to it, and prints the version it built', async () => {
    assert.match(await ok('image', 'import', 'debian', 'golden.img'), /^imported debian@1 /);
    // Run from the test's folder: the spec's from: is read relative to the spec, not to the cwd.
    assert.match(await ok('template', 'apply', join('spec', 'web.yaml')), /^built web@1 in \d+ ms\n$/);
    const t = await showJson();
    assert.deepEqual(
      t.versions.map((v) => v.ref),
      ['web@1'],
    );
    const disk = t.versions[0]!.volume;
    assert.deepEqual(extCat(disk, GPT.root, '/etc/motd'), motd, 'the bytes of the from: file');
    const st = extStat(disk, GPT.root, '/etc/motd');
    assert.deepEqual([st?.mode, st?.uid, st?.gid], [0o640, 1000, 27]);
    assert.equal(extCat(disk, GPT.root, '/etc/resolv.conf').toString(), 'nameserver 10.1.2.3\n');
    assert.equal(extStat(disk, GPT.root, '/etc/machine-id'), undefined);
    assert.equal(e2fsck(disk, GPT.root).code, 0);
    assert.equal(sha256(disk), t.versions[0]!.sha256);
    assert.equal(sha256(golden), goldenSha, 'the golden file is unchanged');
  });

  it('lists templates in a table', async () => {
    const [header, row, ...rest] = lines(await ok('template', 'list'));
    assert.match(header!, /^NAME\s+BASE\s+REBUILD\s+LATEST\s+LAST BUILD\s+ROLLOVER$/);
    assert.match(row!, /^web\s+debian\s+auto\s+web@1\s+done \d+ ms\s+-$/);
    assert.deepEqual(rest, []);
    // The alias, and the raw reply.
    assert.equal(await ok('template', 'ls'), `${header}\n${row}\n`);
    assert.deepEqual(
      parse<Template[]>(await cli(['template', 'list', '--json'])).map((t) => [t.name, t.base, t.versions.length]),
      [['web', 'debian', 1]],
    );
  });

  it('shows a template: base, spec digest, versions with their sha256, the last build, no rollover yet', async () => {
    const t = await showJson();
    const out = await ok('template', 'show', 'web');
    assert.match(out, /^name\s+web$/m);
    assert.match(out, /^base\s+debian$/m);
    assert.match(out, /^rebuild\s+auto$/m);
    assert.match(out, new RegExp(`^spec sha256\\s+${t.specSha256}$`, 'm'));
    assert.match(t.specSha256, /^[0-9a-f]{64}$/);
    assert.match(out, new RegExp(`^versions\\s+web@1 \\(${t.versions[0]!.sha256.slice(0, 12)}\\)$`, 'm'));
    assert.match(out, /^last build\s+done \(apply\) \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ, \d+ ms$/m);
    assert.match(out, /^rollover\s+-$/m);
  });

  it('builds again with the same inputs: the same bytes, no new version', async () => {
    const before = await showJson();
    assert.match(await ok('template', 'build', 'web'), /^web@1 is unchanged \(same bytes\) in \d+ ms\n$/);
    const after = await showJson();
    assert.deepEqual(
      after.versions.map((v) => [v.ref, v.sha256]),
      before.versions.map((v) => [v.ref, v.sha256]),
    );
    assert.equal(after.latestBuild?.state, 'unchanged');
  });

  it("prints a build's log: what debugfs and e2fsck did, and the sealed sha256", async () => {
    const v1 = (await showJson()).versions[0]!;
    const latest = await ok('template', 'log', 'web');
    assert.match(lines(latest)[0]!, /^# build \S+: unchanged \(build\) /, 'the latest build by default');
    const log = await ok('template', 'log', 'web@1');
    assert.match(lines(log)[0]!, /^# build \S+: done \(apply\) /, 'the build that made version 1');
    assert.match(log, /\$ debugfs -w -f \S+ disk\?offset=1048576$/m);
    assert.match(log, /debugfs: write \S+ "\/etc\/\.\/motd"$/m);
    assert.match(log, /debugfs: rm "\/etc\/\.\/machine-id"$/m);
    assert.match(log, /\$ e2fsck -fn disk\?offset=1048576$/m);
    assert.match(log, /Pass 5: Checking group summary information$/m);
    assert.ok(log.includes(`sealed read-only: sha256 ${v1.sha256}\n`), log);
    assert.match(log, /version web@1$/m);
    const all = await ok('template', 'log', 'web', '--all');
    assert.equal(all.match(/^# build /gm)?.length, 2, 'both builds, newest first');
    assert.deepEqual(
      parse<Build[]>(await cli(['template', 'log', 'web@1', '--json'])).map((b) => [b.state, b.version]),
      [['done', 1]],
    );
  });

  it('log NAME@N shows the build of version N, and --version stays the CLI\'s own', async () => {
    const r = await cli(['template', 'log', 'web@1']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(lines(r.stdout)[0]!, /^# build \S+: done \(apply\) /, `the log of version 1:\n${r.stdout}`);
  });

  it('applies the spec again after its from: file changed: a new version', async () => {
    motd = Buffer.from('changed motd\n');
    await writeFile(join(specDir, 'motd.txt'), motd);
    // A relative path from the spec's own folder this time.
    const r = await cli(['template', 'apply', 'web.yaml'], specDir);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^built web@2 in \d+ ms\n$/);
    const t = await showJson();
    assert.deepEqual(
      t.versions.map((v) => v.ref),
      ['web@1', 'web@2'],
    );
    assert.deepEqual(extCat(t.versions[1]!.volume, GPT.root, '/etc/motd'), motd);
    assert.match(await ok('template', 'log', 'web@2'), /ms {2}version web@2$/m);
  });

  it('adds hosts with --var values, which the per-host data is rendered with', async () => {
    const h = parse<Host>(await cli(['host', 'add', 'h1', '--var', 'hostname=web-01', '--var', 'rack=b1', '--json']));
    assert.deepEqual(h.vars, { hostname: 'web-01', rack: 'b1' });
    assert.equal(await ok('host', 'add', 'h2', '--var', 'hostname=web-02'), 'added host h2\n');
    assert.match(await ok('provision', 'h1', 'web'), /^image\s+web@2$/m);
    assert.equal(await meta('h1'), 'instance-id: h1\nlocal-hostname: web-01\nrack: b1\n');
  });

  it('host set changes values: the next fetch of the per-host data has them', async () => {
    assert.equal(await ok('host', 'set', 'h1', 'hostname=web-11', 'rack=b2'), 'host h1: hostname=web-11 rack=b2\n');
    assert.equal(await meta('h1'), 'instance-id: h1\nlocal-hostname: web-11\nrack: b2\n');
    const h = parse<Host>(await cli(['host', 'set', 'h1', 'hostname=web-01', '--json']));
    assert.deepEqual(h.vars, { hostname: 'web-01', rack: 'b2' });
  });

  it('host set --unset removes a value: the per-host default applies again', async () => {
    const r = await cli(['host', 'set', 'h1', '--unset', 'rack']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'host h1: hostname=web-01\n');
    const h = (await api<Host[]>('/v1/hosts')).find((x) => x.id === 'h1');
    assert.deepEqual(h?.vars, { hostname: 'web-01' }, 'rack is gone, not set to an empty value');
    assert.equal(await meta('h1'), 'instance-id: h1\nlocal-hostname: web-01\nrack: unassigned\n');
  });

  it('refuses bad host values and unknown hosts with the mapped exit codes, one line each', async () => {
    const cases: { args: string[]; exit: number; says: RegExp }[] = [
      { args: ['host', 'add', 'h3', '--var', 'novalue'], exit: EXIT_CODES.PRESTAGE_USAGE, says: /--var.*NAME=VALUE/ },
      { args: ['host', 'add', 'h3', '--var', '9x=1'], exit: EXIT_CODES.PRESTAGE_USAGE, says: /NAME=VALUE/ },
      { args: ['host', 'set', 'ghost', 'a=b'], exit: EXIT_CODES.PRESTAGE_NOT_FOUND, says: /host 'ghost' not found/ },
      { args: ['host', 'add', 'h1', '--var', 'a=b'], exit: EXIT_CODES.PRESTAGE_CONFLICT, says: /h1/ },
    ];
    for (const c of cases) {
      const r = await cli(c.args);
      assert.equal(r.code, c.exit, `${c.args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stdout, '', c.args.join(' '));
      assertOneErrorLine(r, c.says);
    }
    assert.deepEqual(
      (await api<Host[]>('/v1/hosts')).map((h) => [h.id, h.vars.hostname]),
      [
        ['h1', 'web-01'],
        ['h2', 'web-02'],
      ],
      'no host added, no value changed',
    );
  });

  it('host set without a value to change, or with a malformed one, says why (exit 2)', async () => {
    for (const [args, says] of [
      [['host', 'set', 'h1'], /NAME=VALUE/],
      [['host', 'set', 'h1', 'novalue'], /NAME=VALUE/],
    ] as const) {
      const r = await cli(args);
      assert.equal(r.code, EXIT_CODES.PRESTAGE_USAGE, `${args.join(' ')}: ${r.stderr}`);
      assertOneErrorLine(r, says);
    }
  });

  it('a new golden version rebuilds the template and rolls its pool over; show and list give the rollover times', async () => {
    const v2 = copyDisk(golden, join(dir, 'golden-v2.img'));
    extDamage(v2, GPT.root, 'rm /etc/keep');
    assert.match(await ok('image', 'import', 'debian', 'golden-v2.img'), /^imported debian@2 /);
    const t = await waitFor(
      'the rebuild on debian@2, rolled over and refilled',
      async () => {
        const s = await showJson();
        const b = s.latestBuild;
        if (b?.trigger === 'base-version' && b.state === 'failed') assert.fail(JSON.stringify(b));
        return b?.trigger === 'base-version' && b.rolloverMs !== null && b.refilledMs !== null && s;
      },
      60_000,
      200,
    );
    assert.deepEqual(
      t.versions.map((v) => v.ref),
      ['web@1', 'web@2', 'web@3'],
    );
    assert.equal(t.latestBuild?.version, 3);
    const disk = t.versions[2]!.volume;
    assert.equal(extStat(disk, GPT.root, '/etc/keep'), undefined, 'built on the new golden');
    assert.deepEqual(extCat(disk, GPT.root, '/etc/motd'), motd);
    const out = await ok('template', 'show', 'web');
    assert.match(out, /^last build\s+done \(base-version\) .*, \d+ ms$/m);
    assert.match(out, /^rollover\s+new version served \d+ ms after the base version appeared; pool refilled after \d+ ms$/m);
    assert.match(out, /^versions\s+web@1 \([0-9a-f]{12}\), web@2 \([0-9a-f]{12}\), web@3 \([0-9a-f]{12}\)$/m);
    const row = lines(await ok('template', 'list'))[1]!;
    assert.match(row, /^web\s+debian\s+auto\s+web@3\s+done \d+ ms\s+\d+ ms \/ refilled \d+ ms$/);
    assert.match(await ok('template', 'log', 'web'), /^# build \S+: done \(base-version\) /);
    // h1 keeps the copy it was given until it is released.
    assert.equal((await api<{ mapping: { imageId: string } | null }[]>('/v1/hosts')).filter((h) => h.mapping !== null).length, 1);
  });

  it('refuses malformed spec files, naming FILE:LINE and the field, and builds nothing', async () => {
    const write = (name: string, text: string) => writeFile(join(specDir, name), text);
    await write('typo.yaml', 'name: bad\nbase: debian\nfils: []\nfiles:\n  - path: /etc/x\n    mode: "0999"\n    content: "{{dnss}}"\n');
    await write('from.yaml', 'name: bad\nbase: debian\nfiles:\n  - path: /etc/x\n    from: missing.txt\n');
    await write('syntax.yaml', 'name: bad\nbase: [debian\n');
    await write('partition.yaml', 'name: bad\nbase: debian\npartition: 9\n');
    await write('nobase.yaml', 'name: bad\nbase: nope\n');
    const typo = await cli(['template', 'apply', 'typo.yaml'], specDir);
    assert.equal(typo.code, EXIT_CODES.PRESTAGE_INPUT, typo.stderr);
    assert.equal(typo.stdout, '');
    assert.deepEqual(lines(typo.stderr), [
      "prestage: typo.yaml:3: fils: unknown field; did you mean 'files'?",
      'typo.yaml:6: files[0].mode: the string "0999" is not an octal mode 0-7777 (e.g. "0644")',
      "typo.yaml:7: files[0].content: '{{dnss}}' is not a declared param (declare it under params, or write '{{{{' for a literal '{{')",
    ]);
    const cases: { file: string; exit: number; says: RegExp }[] = [
      { file: 'from.yaml', exit: EXIT_CODES.PRESTAGE_INPUT, says: /^prestage: from\.yaml:5: files\[0\]\.from: cannot read 'missing\.txt': no such file/ },
      { file: 'syntax.yaml', exit: EXIT_CODES.PRESTAGE_INPUT, says: /^prestage: syntax\.yaml:\d+: YAML syntax: / },
      { file: 'absent.yaml', exit: EXIT_CODES.PRESTAGE_INPUT, says: /^prestage: cannot read template spec 'absent\.yaml': no such file$/ },
      { file: 'partition.yaml', exit: EXIT_CODES.PRESTAGE_BAD_IMAGE, says: /partition 9/ },
      { file: 'nobase.yaml', exit: EXIT_CODES.PRESTAGE_NOT_FOUND, says: /golden image 'nope' not found/ },
    ];
    for (const c of cases) {
      const r = await cli(['template', 'apply', c.file], specDir);
      assert.equal(r.code, c.exit, `${c.file}: ${r.stderr}`);
      assert.equal(r.stdout, '', c.file);
      assertOneErrorLine(r, c.says);
    }
    assert.deepEqual(
      (await api<Template[]>('/v1/templates')).map((t) => t.name),
      ['web'],
      'no template made',
    );
    assert.deepEqual(
      (await api<{ ref: string }[]>('/v1/images')).map((i) => i.ref).filter((r) => r.startsWith('bad')),
      [],
    );
  });

  it('says an unknown template is not found (exit 3) and a bad NAME@N is an input error', async () => {
    for (const args of [
      ['template', 'show', 'nope'],
      ['template', 'build', 'nope'],
      ['template', 'log', 'nope'],
      ['template', 'rm', 'nope'],
    ]) {
      const r = await cli(args);
      assert.equal(r.code, EXIT_CODES.PRESTAGE_NOT_FOUND, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stdout, '');
      assertOneErrorLine(r, /^prestage: template 'nope' not found$/);
    }
    const bad = await cli(['template', 'log', 'web@x']);
    assert.equal(bad.code, EXIT_CODES.PRESTAGE_INPUT);
    assertOneErrorLine(bad, /expected NAME@N with N a version number/);
  });

  it('refuses to remove a template while a host is mapped to it; removes it, its versions and its pool once released', async () => {
    const refused = await cli(['template', 'rm', 'web']);
    assert.equal(refused.code, EXIT_CODES.PRESTAGE_CONFLICT, refused.stderr);
    assertOneErrorLine(refused, /web@2 has 1 mapped.*release its hosts first/);
    assert.equal((await showJson()).versions.length, 3, 'nothing removed');
    assert.match(await ok('release', 'h1'), /^released h1 /);
    assert.equal(await ok('template', 'rm', 'web'), 'removed template web\n');
    const gone = await cli(['template', 'show', 'web']);
    assert.equal(gone.code, EXIT_CODES.PRESTAGE_NOT_FOUND);
    assert.equal(await ok('template', 'list'), 'no templates (make one: prestage template apply FILE)\n');
    assert.deepEqual(
      (await api<{ ref: string }[]>('/v1/images')).map((i) => i.ref),
      ['debian@1', 'debian@2'],
    );
    assert.deepEqual(
      (await api<{ source: string }[]>('/v1/pools')).map((p) => p.source),
      ['debian'],
    );
    // The golden the template was built on is untouched.
    assert.equal(sha256(golden), goldenSha);
    assert.equal(await readFile(join(specDir, 'web.yaml'), 'utf8'), SPEC);
  });
});
