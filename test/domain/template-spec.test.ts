import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { Value } from '@sinclair/typebox/value';
import {
  InputError, planFromSpec, renderPerHost, scanPlaceholders, substitute, validateTemplateSpec,
  type TemplateSpec, type TemplateSpecIssue,
} from '../../src/domain/index.js';
import { TemplateSpecBody } from '../../src/api/template-spec-schema.js';
import { readTemplateSpecText } from '../../src/cli/template-yaml.js';
import { loadTemplateFile } from '../../src/cli/template-file.js';

const EXAMPLE = 'examples/templates/web.yaml';

/** The InputError a spec text gets; fails the test when it parses. */
function specError(text: string, fileName = 'spec.yaml', resolveFrom?: (p: string) => Buffer): InputError {
  try {
    readTemplateSpecText(text, fileName, resolveFrom ? { resolveFrom } : {});
  } catch (e) {
    assert.ok(e instanceof InputError, `expected an InputError, got ${String(e)}`);
    return e;
  }
  assert.fail(`expected an error for:\n${text}`);
}

const issuesOf = (e: InputError) => e.details.issues as TemplateSpecIssue[];

/** A minimal valid spec with `extra` YAML appended. */
const spec = (extra = '') => `name: web\nbase: debian-12\n${extra}`;

describe('template spec files', () => {
  it('reads the example, and the API accepts what it makes', async () => {
    const s = await loadTemplateFile(EXAMPLE);
    assert.equal(s.name, 'web-berlin');
    assert.equal(s.base, 'debian-12');
    assert.deepEqual(s.partition, { number: 1 });
    assert.equal(s.rebuild, 'auto');
    const keys = s.files.find((f) => f.path === '/root/.ssh/authorized_keys');
    assert.equal(keys?.mode, 0o600);
    assert.ok(s.remove.includes('/etc/machine-id'));
    assert.deepEqual(s.seed?.partition, { label: 'cidata' });
    assert.deepEqual(Object.keys(s.perHost?.params ?? {}), ['hostname', 'address', 'ssh_key']);
    assert.deepEqual(validateTemplateSpec(JSON.parse(JSON.stringify(s))), s);
    assert.ok(Value.Check(TemplateSpecBody, s), [...Value.Errors(TemplateSpecBody, s)].map((e) => `${e.path}: ${e.message}`).join('\n'));
  });

  it('fills in defaults', () => {
    const s = readTemplateSpecText(spec('files:\n  - path: /etc/motd\n    content: hi\n'), 'x.yaml');
    assert.deepEqual(s, {
      name: 'web', base: 'debian-12', filesystem: 'ext', rebuild: 'auto', params: {}, remove: [],
      files: [{ path: '/etc/motd', mode: 0o644, uid: 0, gid: 0, contentBase64: Buffer.from('hi').toString('base64'), substitute: true }],
    });
  });

  it('reads a mode as octal in every form, and params as written', () => {
    const s = readTemplateSpecText(
      spec(`params: {version: 1.10, debug: True, port: 0800}
files:
  - {path: /a, mode: "0600", content: x}
  - {path: /b, mode: 0755, content: x}
  - {path: /c, mode: 640, content: x}
  - {path: /d, mode: 0o4755, content: x}
  - {path: /e, mode: 7777, content: x, owner: 1000, group: "1000"}
`),
      'x.yaml',
    );
    assert.deepEqual(s.files.map((f) => f.mode), [0o600, 0o755, 0o640, 0o4755, 0o7777]);
    assert.deepEqual([s.files[4]?.uid, s.files[4]?.gid], [1000, 1000]);
    assert.deepEqual(s.params, { version: '1.10', debug: 'True', port: '0800' });
  });

  it('reads `from:` relative to the spec file, taken as bytes unless told to substitute', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'prestage-spec-'));
    try {
      await mkdir(join(dir, 'keys'));
      await writeFile(join(dir, 'keys', 'admin.pub'), 'ssh-ed25519 AAAA {{x}}\n');
      await writeFile(join(dir, 'conf'), 'site={{site}}\n');
      await writeFile(
        join(dir, 't.yaml'),
        spec('params: {site: ber}\nfiles:\n  - {path: /root/.ssh/authorized_keys, from: keys/admin.pub}\n  - {path: /etc/site, from: conf, substitute: true}\n'),
      );
      const s = await loadTemplateFile(join(dir, 't.yaml'));
      assert.deepEqual(s.files.map((f) => [Buffer.from(f.contentBase64, 'base64').toString(), f.substitute]), [
        ['ssh-ed25519 AAAA {{x}}\n', false],
        ['site={{site}}\n', true],
      ]);
      assert.equal(planFromSpec(s, 0).writes[1]?.content.toString(), 'site=ber\n');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('names the spec line of a `from:` file it cannot read', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'prestage-spec-'));
    try {
      await writeFile(join(dir, 't.yaml'), spec('files:\n  - path: /etc/a\n    from: nope.txt\n'));
      const file = join(dir, 't.yaml');
      await assert.rejects(loadTemplateFile(file), (e: unknown) => {
        assert.ok(e instanceof InputError);
        assert.match(e.message, new RegExp(`^${file.replaceAll('.', '\\.')}:5: files\\[0\\]\\.from: cannot read 'nope\\.txt': no such file`));
        assert.deepEqual([e.details.field, e.details.line], ['files[0].from', 5]);
        return true;
      });
      await assert.rejects(loadTemplateFile(file, { name: 't.yaml' }), /^InputError: t\.yaml:5: files\[0\]\.from/);
      await assert.rejects(loadTemplateFile(join(dir, 'missing.yaml')), /cannot read template spec .*no such file/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('reports where a placeholder in a `from:` file is unknown', () => {
    const e = specError(spec('files:\n  - {path: /etc/a, from: a.conf, substitute: true}\n'), 'x.yaml', () => Buffer.from('one\ntwo {{nope}}\n'));
    assert.match(e.message, /^x\.yaml:4: files\[0\]\.from: '\{\{nope\}\}' is not a declared param .*\(in a\.conf, line 2\)$/);
  });
});

describe('template spec errors name the field and the line', () => {
  const cases: { name: string; text: string; field: string; line: number; message: RegExp; fileName?: string }[] = [
    { name: 'unknown key, with a suggestion', text: spec('fils: []\n'), field: 'fils', line: 3, message: /unknown field; did you mean 'files'\?/ },
    { name: 'kebab-case key written camelCase', text: spec('perHost: {}\n'), field: 'perHost', line: 3, message: /did you mean 'per-host'\?/ },
    { name: 'unknown key in a file entry', text: spec('files:\n  - path: /a\n    content: x\n    mdoe: "0600"\n'), field: 'files[0].mdoe', line: 6, message: /did you mean 'mode'\?/ },
    { name: 'wrong type', text: spec('files:\n  path: /a\n'), field: 'files', line: 3, message: /expected a list, got a mapping/ },
    { name: 'wrong enum', text: spec('rebuild: sometimes\n'), field: 'rebuild', line: 3, message: /expected 'auto' or 'manual'/ },
    { name: 'bad mode', text: spec('files:\n  - path: /a\n    mode: "0999"\n    content: x\n'), field: 'files[0].mode', line: 5, message: /"0999" is not an octal mode/ },
    { name: 'mode too big', text: spec('files:\n  - {path: /a, mode: 17777, content: x}\n'), field: 'files[0].mode', line: 4, message: /not an octal mode 0-7777/ },
    { name: 'owner by name', text: spec('files:\n  - {path: /a, owner: root, content: x}\n'), field: 'files[0].owner', line: 4, message: /numeric uid/ },
    { name: 'both content and from', text: spec('files:\n  - path: /a\n    content: x\n    from: a.txt\n'), field: 'files[0].from', line: 6, message: /either 'content' or 'from', not both/ },
    { name: 'neither content nor from', text: spec('files:\n  - path: /a\n'), field: 'files[0]', line: 4, message: /give the file's 'content' or 'from'/ },
    { name: 'relative path', text: spec('files:\n  - path: etc/motd\n    content: x\n'), field: 'files[0].path', line: 4, message: /must be absolute/ },
    { name: "'..' in a path", text: spec('remove: [/etc/../root]\n'), field: 'remove[0]', line: 3, message: /must not contain '\.\.'/ },
    { name: "'//' in a path", text: spec('remove:\n  - /etc//x\n'), field: 'remove[0]', line: 4, message: /no '\.' parts, '\/\/' or trailing '\/'/ },
    {
      name: 'duplicate path', text: spec('files:\n  - path: /etc/a\n    content: x\n  - path: /etc/a\n    content: y\n'),
      field: 'files[1].path', line: 6, message: /'\/etc\/a' is already written by files\[0\] \(line 4\)/,
    },
    { name: 'written and removed', text: spec('files:\n  - {path: /etc/a, content: x}\nremove:\n  - /etc/a\n'), field: 'remove[0]', line: 6, message: /also written by files\[0\]/ },
    {
      name: 'undeclared param, at its line inside a block', text: spec('params: {dns: 1.1.1.1}\nfiles:\n  - path: /etc/resolv.conf\n    content: |\n      search x\n      nameserver {{ dnss }}\n'),
      field: 'files[0].content', line: 8, message: /'\{\{dnss\}\}' is not a declared param; did you mean 'dns'\?/,
    },
    {
      name: 'per-host param in a file', text: spec('files:\n  - {path: /etc/hostname, content: "{{hostname}}"}\nper-host:\n  params: {hostname: {}}\n'),
      field: 'files[0].content', line: 4, message: /is a per-host param: only per-host documents may use it/,
    },
    { name: 'host.id in the seed', text: spec('seed:\n  as: iso\n  partition: {label: cidata}\n  meta-data: |\n    instance-id: {{host.id}}\n'), field: 'seed.meta-data', line: 7, message: /is the host's id/ },
    { name: 'malformed placeholder', text: spec('files:\n  - {path: /a, content: "{{ v1[0] }}"}\n'), field: 'files[0].content', line: 4, message: /not a param name \(write '\{\{\{\{' for a literal/ },
    { name: 'bad param name', text: spec('params:\n  9lives: x\n'), field: 'params."9lives"', line: 4, message: /not a param name/ },
    { name: 'reserved param name', text: spec('params:\n  host.name: x\n'), field: 'params.host.name', line: 4, message: /reserved/ },
    { name: 'param without value', text: spec('params:\n  dns:\n'), field: 'params.dns', line: 4, message: /has no value/ },
    { name: 'per-host param also a template param', text: spec('params: {hostname: x}\nper-host:\n  params:\n    hostname: {}\n'), field: 'per-host.params.hostname', line: 6, message: /also a template param/ },
    { name: 'multi-line per-host default', text: spec('per-host:\n  params:\n    motd: {default: "a\\nb"}\n'), field: 'per-host.params.motd.default', line: 5, message: /must be one line/ },
    { name: 'bad base', text: 'name: web\nbase: Debian@x\n', field: 'base', line: 2, message: /invalid image name 'Debian'/ },
    { name: 'bad version', text: 'name: web\nbase: debian@0\n', field: 'base', line: 2, message: /invalid version/ },
    { name: 'bad name', text: 'name: Web Servers\nbase: debian\n', field: 'name', line: 1, message: /invalid image name/ },
    { name: 'missing base', text: 'name: web\n', field: 'base', line: 1, message: /missing \(required\)/ },
    { name: 'partition selector typo', text: spec('partition: {lable: rootfs}\n'), field: 'partition.lable', line: 3, message: /did you mean 'label'\?/ },
    { name: 'partition with two selectors', text: spec('partition: {number: 1, label: rootfs}\n'), field: 'partition', line: 3, message: /one of number, label or guid, not number and label/ },
    { name: 'partition 0', text: spec('partition: 0\n'), field: 'partition', line: 3, message: /partition number 1-256/ },
    { name: 'partition word', text: spec('partition: rootfs\n'), field: 'partition', line: 3, message: /expected a partition number, \{number: N\}/ },
    { name: 'whole-disk with a seed over it', text: spec('partition: whole-disk\nseed: {as: iso, partition: whole-disk}\n'), field: 'seed.partition', line: 4, message: /expected a partition number/ },
    { name: 'bad guid', text: spec('partition:\n  guid: 1234-abcd\n'), field: 'partition.guid', line: 4, message: /not a GUID/ },
    { name: 'seed over the files', text: spec('seed: {as: iso, partition: 1}\n'), field: 'seed.partition', line: 3, message: /the seed needs a partition of its own/ },
    { name: 'seed without partition', text: spec('seed:\n  as: vfat\n'), field: 'seed.partition', line: 3, message: /missing \(required\)/ },
    { name: 'YAML syntax error', text: 'name: web\nbase: debian: 12\nfiles: []\n', field: '', line: 2, message: /YAML syntax: / },
    { name: 'YAML bad indentation', text: 'name: web\nbase: debian\nfiles:\n  - path: /a\n   content: x\n', field: '', line: 5, message: /YAML syntax: / },
    { name: 'duplicate key', text: 'name: web\nbase: debian\nname: x\n', field: '', line: 3, message: /YAML syntax: Map keys must be unique/ },
    { name: 'JSON syntax error', text: '{\n  "name": "web",\n  "base": "debian"\n  "files": []\n}\n', field: '', line: 4, message: /JSON syntax: Missing ,/, fileName: 'web.json' },
    { name: 'JSON field error', text: '{\n  "name": "web",\n  "base": "debian",\n  "files": [\n    {"path": "/a", "mode": "0999", "content": ""}\n  ]\n}\n', field: 'files[0].mode', line: 5, message: /not an octal mode/, fileName: 'web.json' },
    { name: 'empty file', text: '# nothing yet\n', field: '', line: 1, message: /the spec is empty/ },
    { name: 'not a mapping', text: '- name: web\n', field: '', line: 1, message: /expected a mapping, got a list/ },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const fileName = c.fileName ?? 'web.yaml';
      const e = specError(c.text, fileName);
      const issues = issuesOf(e);
      const hit = issues.find((i) => i.field === c.field && c.message.test(i.message));
      assert.ok(hit, `no issue for ${c.field} matching ${String(c.message)} in:\n${e.message}`);
      assert.equal(hit.line, c.line, e.message);
      const prefix = c.field === '' ? `${fileName}:${c.line}: ` : `${fileName}:${c.line}: ${c.field}: `;
      assert.ok(e.message.split('\n').some((l) => l.startsWith(prefix) && c.message.test(l)), `no line '${prefix}…' in:\n${e.message}`);
    });
  }

  it('collects every error, one per line, in file order, the first one in details', () => {
    const e = specError(`name: Web
base: debian-12
fils: []
files:
  - path: etc/x
    mode: "0999"
    content: |
      {{nope}}
  - path: /a/../b
    content: x
seed:
  as: floppy
  partition: {label: cidata}
`);
    const lines = e.message.split('\n');
    assert.deepEqual(lines.map((l) => l.split(': ')[0]), ['spec.yaml:1', 'spec.yaml:3', 'spec.yaml:5', 'spec.yaml:6', 'spec.yaml:8', 'spec.yaml:9', 'spec.yaml:12']);
    assert.equal(issuesOf(e).length, lines.length);
    assert.deepEqual([e.details.field, e.details.line, e.details.file], ['name', 1, 'spec.yaml']);
  });

  it('refuses YAML types a spec has no use for', () => {
    assert.match(specError(spec('params: !!set {a, b}\n')).message, /params: expected a mapping, got a set/);
    assert.match(specError(spec('description: !!timestamp 2001-12-14\n')).message, /description: expected a string, got a timestamp/);
  });

  it('takes !!binary content as bytes', () => {
    const s = readTemplateSpecText(spec('files:\n  - path: /x\n    content: !!binary AAH/\n'), 'x.yaml');
    assert.deepEqual([s.files[0]?.contentBase64, s.files[0]?.substitute], ['AAH/', false]);
  });
});

describe('template specs from the API', () => {
  let valid: TemplateSpec;
  before(async () => {
    valid = await loadTemplateFile(EXAMPLE);
  });
  const body = (patch: Record<string, unknown>) => ({ ...JSON.parse(JSON.stringify(valid)) as Record<string, unknown>, ...patch });
  const apiError = (b: unknown) => {
    try {
      validateTemplateSpec(b);
    } catch (e) {
      assert.ok(e instanceof InputError);
      return e;
    }
    assert.fail('expected an error');
  };

  it('names JSON paths, without lines', () => {
    const e = apiError(body({ files: [{ path: '/a', mode: 0o10000, uid: 0, gid: 0, contentBase64: 'eA==', substitute: false }], 'per-host': {} }));
    assert.deepEqual(e.message.split('\n'), [
      "per-host: unknown field; did you mean 'perHost'?",
      'files[0].mode: expected a mode 0-4095, got the number 4096',
    ]);
    assert.equal(e.details.line, undefined);
  });

  it('applies the file rules to the normalized form', () => {
    const e = apiError(body({ params: {}, remove: ['relative', '/etc/a'], files: [{ path: '/etc/a', mode: 420, uid: 0, gid: 0, contentBase64: Buffer.from('{{dns}}').toString('base64'), substitute: true }] }));
    assert.match(e.message, /remove\[0\]: "relative" must be absolute/);
    assert.match(e.message, /remove\[1\]: '\/etc\/a' is also written by files\[0\]/);
    assert.match(e.message, /files\[0\]\.contentBase64: '\{\{dns\}\}' is not a declared param/);
    assert.match(apiError(body({ files: [{ path: '/a', mode: 420, uid: 0, gid: 0, contentBase64: 'not base64!', substitute: false }] })).message, /contentBase64: is not base64/);
    assert.match(apiError(body({ filesystem: undefined })).message, /filesystem: missing/);
  });

  it('throws only InputError, whatever JSON arrives', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        try {
          validateTemplateSpec(v);
        } catch (e) {
          assert.ok(e instanceof InputError, String(e));
        }
      }),
      { numRuns: 500 },
    );
  });

  it('throws only InputError for specs that are nearly right', () => {
    const anything = fc.oneof(fc.jsonValue(), fc.constantFrom('/etc/x', '{{dns}}', '{{host.id}}', 'whole-disk', 'iso', 'auto', 'AAAA', 420, { label: 'x' }));
    const fileEntry = fc.record(
      { path: anything, mode: anything, uid: anything, gid: anything, contentBase64: anything, substitute: anything },
      { requiredKeys: [] },
    );
    const nearly = fc.record(
      {
        name: fc.oneof(fc.constant('web'), anything), base: fc.oneof(fc.constant('debian-12'), anything), description: anything,
        partition: anything, filesystem: anything, rebuild: anything,
        params: fc.oneof(fc.dictionary(fc.string(), anything), anything),
        files: fc.oneof(fc.array(fileEntry, { maxLength: 4 }), anything), remove: anything,
        seed: fc.oneof(fc.record({ as: anything, partition: anything, userData: anything, metaData: anything }, { requiredKeys: [] }), anything),
        perHost: fc.oneof(fc.record({ params: fc.dictionary(fc.string(), anything), metaData: anything }, { requiredKeys: [] }), anything),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(nearly, (v) => {
        try {
          const s = validateTemplateSpec(v);
          assert.ok(Value.Check(TemplateSpecBody, s), 'what validates also fits the schema');
        } catch (e) {
          assert.ok(e instanceof InputError, String(e));
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('throws only InputError for any spec text', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.constantFrom('name: web\nbase: x\nfiles:\n  - ', '{"name": ', 'a: &x [*x]', '!!binary', '? [a]\n: 1')), (text) => {
        try {
          readTemplateSpecText(text, 't.yaml');
        } catch (e) {
          assert.ok(e instanceof InputError, String(e));
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('substitution', () => {
  it('replaces {{name}}, with spaces inside the braces', () => {
    assert.equal(substitute('a {{x}} b {{ y }} c {{x}}', { x: '1', y: '2' }, 't'), 'a 1 b 2 c 1');
  });
  it('writes {{{{ as a literal {{, and leaves lone braces alone', () => {
    assert.equal(substitute('{{{{ v1.local_hostname }} {x} }} {{x}}', { x: '1' }, 't'), '{{ v1.local_hostname }} {x} }} 1');
  });
  it('inserts values verbatim, never expanding them again', () => {
    assert.equal(substitute('{{a}}', { a: '{{b}}', b: 'no' }, 't'), '{{b}}');
  });
  it('refuses unknown names and malformed placeholders, naming where', () => {
    assert.throws(() => substitute('x {{nope}}', {}, 'files[0] /etc/a'), (e: unknown) => e instanceof InputError && /^files\[0\] \/etc\/a: '\{\{nope\}\}' has no value$/.test(e.message));
    assert.throws(() => substitute('{{ a b }}', { a: '1' }, 't'), /not a param name/);
    assert.throws(() => substitute('{{a', { a: '1' }, 't'), /without a closing/);
    assert.throws(() => substitute('{{constructor}}', {}, 't'), InputError);
  });
  it('scans offsets for line numbers', () => {
    assert.deepEqual(scanPlaceholders('ab\n{{x}}').pieces, [{ literal: 'ab\n' }, { name: 'x', at: 3 }]);
  });
  it('round-trips text without braces, for any text', () => {
    fc.assert(fc.property(fc.string().filter((s) => !s.includes('{{')), (s) => assert.equal(substitute(s, {}, 't'), s)));
  });
});

describe('customize plans', () => {
  const base = (extra: string) => readTemplateSpecText(spec(extra), 'x.yaml');

  it('substitutes params into files and the seed, and carries the epoch', () => {
    const s = base(`params: {dns: 10.0.0.53}
files:
  - {path: /etc/resolv.conf, mode: "0644", content: "nameserver {{dns}}\\n"}
  - {path: /etc/raw, content: "{{dns}}", substitute: false}
remove: [/etc/machine-id]
seed:
  as: vfat
  partition: {label: cidata}
  user-data: "#cloud-config\\nntp: {servers: [{{dns}}]}\\n"
`);
    const plan = planFromSpec(s, 1_700_000_000);
    assert.deepEqual(plan.partition, { number: 1 });
    assert.equal(plan.filesystem, 'ext');
    assert.equal(plan.epoch, 1_700_000_000);
    assert.deepEqual(plan.writes.map((w) => [w.path, w.mode, w.content.toString()]), [
      ['/etc/resolv.conf', 0o644, 'nameserver 10.0.0.53\n'],
      ['/etc/raw', 0o644, '{{dns}}'],
    ]);
    assert.deepEqual(plan.removes, ['/etc/machine-id']);
    assert.deepEqual(
      Object.fromEntries(Object.entries(plan.seed?.files ?? {}).map(([k, v]) => [k, v.toString()])),
      { 'user-data': '#cloud-config\nntp: {servers: [10.0.0.53]}\n', 'meta-data': '' },
    );
  });

  it('keeps the partition the spec names, partition 1 when it names none', () => {
    assert.deepEqual(planFromSpec(base('partition: {label: rootfs}\nfilesystem: vfat\n'), 0).partition, { label: 'rootfs' });
    assert.deepEqual(planFromSpec(base('partition: {guid: 0FC63DAF-8483-4772-8E79-3D69D8477DE4}\n'), 0).partition, { guid: '0fc63daf-8483-4772-8e79-3d69d8477de4' });
    assert.deepEqual(planFromSpec(base(''), 0).partition, { number: 1 });
  });
});

describe('per-host documents', () => {
  let web: TemplateSpec;
  before(async () => {
    web = await loadTemplateFile(EXAMPLE);
  });
  const host = { id: 'web-017', values: { hostname: 'web-017', address: '10.40.8.17/24', ssh_key: 'ssh-ed25519 AAAA team@x' } };

  it('renders meta-data, user-data and network-config with the host values and template params', () => {
    const d = renderPerHost(web, host);
    assert.equal(d.metaData, 'instance-id: web-017\nlocal-hostname: web-017\n');
    assert.match(d.userData, /^#cloud-config\nhostname: web-017\nfqdn: web-017\.ber\.example\.net\n/);
    assert.match(d.userData, / {2}- ssh-ed25519 AAAA team@x\n$/);
    assert.match(d.networkConfig ?? '', /addresses: \[10\.40\.8\.17\/24\]\n[^]*via: 10\.40\.8\.1\n/);
  });

  it('refuses a host that lacks a required value, naming host and param', () => {
    assert.throws(
      () => renderPerHost(web, { id: 'web-018', values: { hostname: 'web-018' } }),
      (e: unknown) => e instanceof InputError && /host 'web-018' gives no value for per-host param 'address', 'ssh_key'/.test(e.message) && e.details.host === 'web-018',
    );
  });

  it('refuses a value with a line break', () => {
    assert.throws(() => renderPerHost(web, { ...host, values: { ...host.values, ssh_key: 'a\nruncmd: [reboot]' } }), /'ssh_key' must be one line/);
  });

  it('uses defaults, ignores other templates\' values, and always gives an instance-id', () => {
    const s = readTemplateSpecText(spec(`per-host:
  params:
    hostname:
    address: {default: dhcp, description: IPv4/prefix or dhcp}
  user-data: "addr={{address}} id={{host.id}}"
`), 'x.yaml');
    const d = renderPerHost(s, { id: '1.10', values: { hostname: 'h1', rack: 'b3' } });
    assert.equal(d.metaData, 'instance-id: "1.10"\nlocal-hostname: "h1"\n');
    assert.equal(d.userData, 'addr=dhcp id=1.10');
    assert.equal(d.networkConfig, undefined);
    const t = readTemplateSpecText(spec('per-host:\n  meta-data: "local-hostname: x\\n"\n'), 'x.yaml');
    assert.equal(renderPerHost(t, { id: 'h2', values: {} }).metaData, 'instance-id: "h2"\nlocal-hostname: x\n');
    assert.deepEqual(renderPerHost(readTemplateSpecText(spec(), 'x.yaml'), { id: 'h3', values: {} }), { metaData: 'instance-id: "h3"\n', userData: '' });
  });
});

describe('the spec reference', () => {
  let doc = '';
  before(async () => {
    doc = await readFile('docs/template-spec.md', 'utf8');
  });
  it('documents every field of the file format', () => {
    for (const field of ['name', 'base', 'description', 'partition', 'filesystem', 'rebuild', 'params', 'files', 'path', 'mode', 'owner', 'group', 'content', 'from', 'substitute', 'remove', 'seed', 'as', 'user-data', 'meta-data', 'network-config', 'per-host', 'default']) {
      assert.ok(doc.includes(`\`${field}\``), `docs/template-spec.md does not mention \`${field}\``);
    }
  });
});

describe('whole-disk templates', () => {
  it("reads 'whole-disk' as a disk that is one filesystem, and plans it so", () => {
    const spec = readTemplateSpecText('name: flat\nbase: debian\npartition: whole-disk\n', 'flat.yaml');
    assert.equal(spec.partition, 'whole-disk');
    assert.equal(planFromSpec(spec, 0).partition, 'whole-disk');
    assert.equal(validateTemplateSpec(spec).partition, 'whole-disk');
  });
});
