// A host really boots a spare of a template: qemu (tcg) boots the Debian cloud kernel with a
// busybox initramfs that brings up the network, whose root disk is the host's copy of the
// template, reached over prestage's built-in NBD server with TLS-PSK (identity = host id).
// On the serial console the host shows a file the template wrote, then runs a script the
// template wrote, which fetches the host's own cloud-init NoCloud-net documents over HTTP from
// `prestage serve`. The seed URL carrying the host's meta-data credential (never its NBD key)
// comes on the kernel command line, as a PXE/iPXE boot would hand it over: the template, shared
// by every host, holds no credential. The host also tries another host's credential and its own
// NBD key on its own documents and gets a refusal.
// Defends the template tier of the design: a template spare is handed out warm (invariant 6),
// per-host data is served to its host only, and neither golden nor template ever changes (1).
// A missing tool fails the test, naming its apt package (scripts/install.sh installs them).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';
import {
  bootFromNbd,
  buildBootGolden,
  GUEST_NET,
  guestParams,
  NET_CONSOLE,
  writeNetInitrd,
  writeQemuPskDir,
  type BootGolden,
  type BootResult,
} from '../helpers/boot-image.js';
import { guardedSteps } from '../helpers/steps.js';
import { makeTempDir, sha256File, waitFor } from '../helpers/files.js';
import { startServe, type ServeProcess } from '../helpers/server.js';

interface Provision {
  image: string;
  copyId: string;
  source: string;
  outcome: string;
  access: { kind: string; uri: string; exportName: string };
}
interface Template {
  name: string;
  versions: { ref: string; sha256: string; volume: string }[];
  latestBuild: { state: string; version: number | null } | null;
}
interface Key {
  key: string;
  pskFileLine: string;
}

/** The NBD endpoint of a provision reply: nbds://HOST@127.0.0.1:PORT/EXPORT. */
function endpoint(p: Provision): { host: string; port: number; exportName: string; identity: string } {
  assert.equal(p.access.kind, 'nbd');
  const u = new URL(p.access.uri);
  assert.equal(u.protocol, 'nbds:', 'TLS is on');
  return { host: u.hostname, port: Number(u.port), exportName: p.access.exportName, identity: decodeURIComponent(u.username) };
}

/** Everything the console said, for an assertion message. */
const shown = (r: BootResult) => `qemu exit ${r.code} after ${r.ms} ms:\n${r.output}`;

const b64 = (s: string) => Buffer.from(s).toString('base64');

const TEMPLATE = 'boot-tpl';
const TEMPLATE_FILE = '/etc/prestage-template';
const FETCH_SCRIPT = '/usr/local/sbin/prestage-meta';
const META_DOCS = ['meta-data', 'user-data'] as const;

/**
 * The script the template writes: it finds the NoCloud-net seed URL (`ds=nocloud-net;s=URL/`,
 * user and meta-data credential in the URL) on the kernel command line and prints each document between markers.
 */
const fetchScript = `#!/bin/sh
# Written by the prestage template ${TEMPLATE}: fetch this host's own cloud-init documents.
# The seed URL, with the host's meta-data credential, comes on the kernel command line; the image has none.
set -f
url=
for w in $(cat /proc/cmdline); do
  case "$w" in
  'ds=nocloud-net;s='*) url=\${w#*;s=} ;;
  esac
done
[ -n "$url" ] || { echo "no ds=nocloud-net;s=URL on the kernel command line"; exit 2; }
rc=0
for doc in ${META_DOCS.join(' ')}; do
  echo "${NET_CONSOLE.begin}$doc"
  timeout 30 wget -q -O - "$url$doc" || rc=1
  echo
  echo "${NET_CONSOLE.end}$doc"
done
exit $rc
`;

describe('a host boots a spare of a template and fetches its own per-host data over HTTP (qemu, tcg)', () => {
  const GOLDEN = 'bootable';
  let dir: string;
  let golden: BootGolden;
  let goldenSha: string;
  let netInitrd: string;
  let serve: ServeProcess | undefined;
  let apiPort: number;
  let a: Provision;
  let keyA: Key;
  let keyB: Key;
  /** Each host's meta-data credential: not its NBD key, which never travels over HTTP. */
  let metaA: string;
  let metaB: string;
  let keyDirA: string;
  let templateSha: string;
  const site = `site-${randomBytes(4).toString('hex')}`;
  const tplMarker = `tpl-${randomBytes(8).toString('hex')}`;
  const hostnameA = `web-a-${randomBytes(4).toString('hex')}`;
  const hostnameB = `web-b-${randomBytes(4).toString('hex')}`;
  const expectedTemplateFile = `template ${TEMPLATE} for ${site}: ${tplMarker}\n`;

  /** What the host is given to fetch its data: host:key@host-loopback:port, as slirp lets it reach the API. */
  const metaUrl = (user: string, key: string, host: string, doc = '') => `http://${user}:${key}@${GUEST_NET.hostLoopback}:${apiPort}/v1/meta/${host}/${doc}`;

  const boot = async (append: string[]) => {
    const e = endpoint(a);
    return bootFromNbd({ kernel: golden.kernel, initrd: netInitrd, host: e.host, port: e.port, exportName: e.exportName, pskDir: keyDirA, username: 'host-a', net: true, append, timeoutSec: 180 });
  };

  // A missing qemu, kernel, busybox-static, sfdisk or mke2fs fails every step below with the
  // apt package to install (never a skip, never a run of "cancelled" steps).
  const { setupFailed, step } = guardedSteps();
  before(async () => {
    dir = await makeTempDir('prestage-tplboot-');
    try {
      golden = await buildBootGolden(join(dir, 'golden'));
      goldenSha = await sha256File(golden.disk);
      netInitrd = await writeNetInitrd(golden.kernel, join(dir, 'golden', 'net-initrd.gz'));
      serve = await startServe(join(dir, 'data'));
      apiPort = Number(new URL(serve.url).port);
    } catch (e) {
      setupFailed(e);
    }
  });

  after(async () => {
    await serve?.kill('SIGTERM');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  step('builds a template on the bootable golden: a file with a param substituted, a fetch script, per-host meta-data', async (t) => {
    const img = await serve!.call<{ sha256: string }>('POST', '/v1/images', { name: GOLDEN, path: golden.disk });
    assert.equal(img.status, 201, JSON.stringify(img.body));
    assert.equal(img.body.sha256, goldenSha);
    const r = await serve!.call<{ template: Template; build: { state: string; version: number; buildMs: number } }>('POST', '/v1/templates', {
      name: TEMPLATE,
      base: GOLDEN,
      partition: { number: 1 },
      filesystem: 'ext',
      rebuild: 'auto',
      params: { site, marker: tplMarker },
      files: [
        { path: TEMPLATE_FILE, mode: 0o644, uid: 0, gid: 0, contentBase64: b64(`template ${TEMPLATE} for {{site}}: {{marker}}\n`), substitute: true },
        { path: FETCH_SCRIPT, mode: 0o755, uid: 0, gid: 0, contentBase64: b64(fetchScript), substitute: false },
      ],
      remove: [],
      perHost: {
        params: { hostname: {} },
        metaData: 'instance-id: {{host.id}}\nlocal-hostname: {{hostname}}\n',
        userData: '#cloud-config\nfqdn: {{hostname}}.{{site}}.example\n',
      },
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.build.state, 'done');
    assert.equal(r.body.build.version, 1);
    t.diagnostic(`template built in ${r.body.build.buildMs} ms`);
    templateSha = r.body.template.versions[0]!.sha256;
    assert.notEqual(templateSha, goldenSha, 'the template differs from its golden');
  });

  step("registers two hosts with their own values; the template's pool makes a spare", async () => {
    for (const [id, hostname] of [
      ['host-a', hostnameA],
      ['host-b', hostnameB],
    ] as const) {
      const h = await serve!.call<{ vars: Record<string, string> }>('POST', '/v1/hosts', { id, vars: { hostname } });
      assert.equal(h.status, 201, JSON.stringify(h.body));
      assert.deepEqual(h.body.vars, { hostname });
    }
    await waitFor('a ready spare of the template', async () => (await serve!.call<{ ready: number }>('GET', `/v1/pools/${TEMPLATE}`)).body.ready >= 1, 60_000, 100);
  });

  step('host A is provisioned warm from a spare of the template', async () => {
    const p = await serve!.call<Provision>('POST', '/v1/hosts/host-a/provision', { source: TEMPLATE });
    assert.equal(p.status, 200, JSON.stringify(p.body));
    a = p.body;
    assert.equal(a.outcome, 'warm', 'a template spare was ready');
    assert.equal(a.image, `${TEMPLATE}@1`);
    assert.equal(endpoint(a).identity, 'host-a');
    const key = async (id: string) => {
      const k = await serve!.call<Key>('GET', `/v1/hosts/${id}/key`);
      assert.equal(k.status, 200);
      assert.match(k.body.key, /^[0-9a-f]{32,}$/);
      assert.equal(k.body.pskFileLine, `${id}:${k.body.key}`);
      return k.body;
    };
    keyA = await key('host-a');
    keyB = await key('host-b');
    assert.notEqual(keyA.key, keyB.key);
    const meta = async (id: string) => {
      const c = await serve!.call<{ secret: string }>('GET', `/v1/hosts/${id}/meta-credential`);
      assert.equal(c.status, 200);
      assert.match(c.body.secret, /^[0-9a-f]{32}$/);
      return c.body.secret;
    };
    metaA = await meta('host-a');
    metaB = await meta('host-b');
    keyDirA = await writeQemuPskDir(join(dir, 'keys-host-a'), keyA.pskFileLine);
  });

  step("host A boots its copy: the template's file, its own meta-data over HTTP, nothing with B's credentials", async (t) => {
    const r = await boot([
      guestParams.show(TEMPLATE_FILE),
      `ds=nocloud-net;s=${metaUrl('host-a', metaA, 'host-a')}`,
      guestParams.run(FETCH_SCRIPT),
      // Another host's credentials on A's documents, A's name with B's secret, A's NBD key, and no credentials.
      guestParams.fetch('b-credentials', metaUrl('host-b', metaB, 'host-a', 'meta-data')),
      guestParams.fetch('b-key', metaUrl('host-a', metaB, 'host-a', 'meta-data')),
      guestParams.fetch('nbd-key', metaUrl('host-a', keyA.key, 'host-a', 'meta-data')),
      guestParams.fetch('anonymous', `http://${GUEST_NET.hostLoopback}:${apiPort}/v1/meta/host-a/meta-data`),
    ]);
    t.diagnostic(`host A booted, fetched and powered off in ${r.ms} ms`);
    assert.ok(r.output.includes(`${NET_CONSOLE.net}up ${GUEST_NET.address}`), `the network came up\n${shown(r)}`);
    assert.equal(r.marker, golden.marker, `the template's copy carries the golden's files\n${shown(r)}`);

    // The file the template wrote, its param substituted.
    assert.equal(r.sections.get(`show:${TEMPLATE_FILE}`), expectedTemplateFile, shown(r));
    assert.equal(r.statuses.get(`show:${TEMPLATE_FILE}`), '0', shown(r));

    // The template's script fetched A's own documents, rendered with A's values.
    assert.equal(r.statuses.get(`run:${FETCH_SCRIPT}`), '0', `the fetch script succeeded\n${shown(r)}`);
    assert.equal(r.sections.get('meta-data')?.trim(), `instance-id: host-a\nlocal-hostname: ${hostnameA}`, shown(r));
    assert.equal(r.sections.get('user-data')?.trim(), `#cloud-config\nfqdn: ${hostnameA}.${site}.example`, shown(r));
    assert.ok(!r.output.includes(hostnameB), `nothing of B's data reaches A\n${shown(r)}`);

    // Another host's credentials get a refusal, and none of A's data.
    for (const label of ['b-credentials', 'b-key', 'nbd-key', 'anonymous']) {
      assert.match(r.statuses.get(`fetch:${label}`) ?? '', /^failed:.*\b401 Unauthorized/, `${label}: refused by the server (not a network failure)\n${shown(r)}`);
      assert.equal(r.sections.get(`fetch:${label}`), '', `${label}: got nothing\n${shown(r)}`);
    }
    const aData = r.output.split(hostnameA).length - 1;
    assert.equal(aData, 2, `A's hostname shows up only in A's meta-data and user-data\n${shown(r)}`);
    assert.ok(r.done, `A unmounted and powered off\n${shown(r)}`);
    assert.equal(r.code, 0, shown(r));
  });

  step("A's new values reach A at its next boot, from the same copy: per-host data needs no copy work", async (t) => {
    const renamed = `${hostnameA}-renamed`;
    const patch = await serve!.call<{ vars: Record<string, string> }>('PATCH', '/v1/hosts/host-a/vars', { hostname: renamed });
    assert.equal(patch.status, 200, JSON.stringify(patch.body));
    const r = await boot([`ds=nocloud-net;s=${metaUrl('host-a', metaA, 'host-a')}`, guestParams.run(FETCH_SCRIPT)]);
    t.diagnostic(`host A booted again in ${r.ms} ms`);
    assert.equal(r.statuses.get(`run:${FETCH_SCRIPT}`), '0', shown(r));
    assert.equal(r.sections.get('meta-data')?.trim(), `instance-id: host-a\nlocal-hostname: ${renamed}`, shown(r));
    const h = await serve!.call<{ mapping: { copyId: string } | null }>('GET', '/v1/hosts/host-a');
    assert.equal(h.body.mapping?.copyId, a.copyId, 'still the same copy');
    assert.equal(r.code, 0, shown(r));
  });

  step('neither the golden nor the template version changed', async () => {
    const tpl = await serve!.call<Template>('GET', `/v1/templates/${TEMPLATE}`);
    assert.equal(tpl.status, 200);
    assert.deepEqual(
      tpl.body.versions.map((v) => [v.ref, v.sha256]),
      [[`${TEMPLATE}@1`, templateSha]],
    );
    assert.equal(await sha256File(tpl.body.versions[0]!.volume), templateSha, 'the sealed template volume is byte-for-byte what was built');
    const img = await serve!.call<{ sha256: string; volume: string }>('GET', `/v1/images/${GOLDEN}`);
    assert.equal(img.body.sha256, goldenSha);
    assert.equal(await sha256File(img.body.volume), goldenSha);
  });
});
