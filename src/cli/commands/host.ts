import { Command, type CommandUnknownOpts } from '@commander-js/extra-typings';
import { InputError } from '../../domain/index.js';
import { hostVar, label } from '../args.js';
import { seg } from '../client.js';
import type { CliContext } from '../context.js';
import { dash, json, keyValues, labels, table, when } from '../format.js';
import type { Host, HostAccess, HostKey, IscsiCredential, MetaCredential } from '../../api/types.js';
import { accessUri, iscsiLine } from './provision.js';
import { writePskFile } from '../psk-file.js';

export function hostCommand(ctx: CliContext): CommandUnknownOpts {
  const host = new Command('host').description('hosts: the machines copies are mapped to');

  host
    .command('add')
    .description('register a host')
    .argument('<id>', 'host id (A-Z, a-z, 0-9, . _ -)')
    .option('--mac <mac>', 'its MAC address, e.g. 52:54:00:12:34:56')
    .option('--label <key=value>', 'a label (repeatable)', label)
    .option('--var <name=value>', "a value for templates' per-host data, e.g. hostname=web-01 (repeatable)", hostVar)
    .option('--iqn <name>', 'its iSCSI initiator name (default: made from the id)')
    .option('--boot <source>', 'the source it is provisioned from when it network-boots with no copy')
    .option('--exporter <kind>', "nbd or iscsi: what serves it when the server runs both (default the server's)")
    .option('--json', 'print the raw JSON reply')
    .action(async (id, opts) => {
      const h = await ctx.client.post<Host>('/v1/hosts', {
        id,
        ...(opts.mac !== undefined && { mac: opts.mac }),
        ...(opts.iqn !== undefined && { iqn: opts.iqn }),
        ...(opts.boot !== undefined && { boot: opts.boot }),
        ...(opts.exporter !== undefined && { exporter: opts.exporter }),
        ...(opts.label !== undefined && { labels: opts.label }),
        ...(opts.var !== undefined && { vars: opts.var }),
      });
      ctx.out(opts.json ? json(h) : `added host ${h.id}${h.mac ? ` (mac ${h.mac})` : ''}`);
    });

  host
    .command('set')
    .description("set or remove the host's values for templates' per-host data (served at /v1/meta/HOST/)")
    .argument('<id>', 'host id')
    .argument('[name=value...]', 'values to set', (v: string, prev: Record<string, string> = {}) => hostVar(v, prev))
    .option('--unset <name>', 'remove a value (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--json', 'print the raw JSON reply')
    .action(async (id, pairs, opts) => {
      const changes: Record<string, string | null> = { ...pairs };
      for (const n of opts.unset ?? []) changes[n] = null;
      if (Object.keys(changes).length === 0) throw new InputError('give NAME=VALUE pairs to set or --unset NAME', { field: 'vars' });
      const h = await ctx.client.patch<Host>(`/v1/hosts/${seg(id)}/vars`, changes);
      ctx.out(opts.json ? json(h) : `host ${h.id}: ${Object.keys(h.vars).length === 0 ? 'no values' : Object.entries(h.vars).map(([k, v]) => `${k}=${v.length > 40 ? `${v.slice(0, 37)}…` : v}`).join(' ')}`);
    });

  host
    .command('list')
    .alias('ls')
    .description('list hosts and what each is mapped to')
    .option('--json', 'print the raw JSON reply')
    .action(async (opts) => {
      const hosts = await ctx.client.list<Host>('/v1/hosts');
      if (opts.json) return ctx.out(json(hosts));
      if (hosts.length === 0) return ctx.out('no hosts (add one: prestage host add ID)');
      ctx.out(
        table(hosts, [
          { header: 'ID', value: (h) => h.id },
          { header: 'MAC', value: (h) => dash(h.mac) },
          { header: 'LABELS', value: (h) => labels(h.labels) },
          { header: 'MAPPING', value: (h) => (h.mapping ? `${h.mapping.source} → ${h.mapping.copyId}` : '-') },
          { header: 'CREATED', value: (h) => when(h.createdAt) },
        ]),
      );
    });

  host
    .command('key')
    .description("print or write the host's TLS-PSK key (identity:hexkey, the key file format of nbdinfo and qemu)")
    .argument('<id>', 'host id')
    .option('--rotate', "make a new key first (the host's open NBD connections are cut)")
    .option('--out <file>', 'write the key into this file (mode 0600), replacing any line of the same identity')
    .option('--json', 'print the raw JSON reply')
    .action(async (id, opts) => {
      const path = `/v1/hosts/${seg(id)}/key`;
      const k = opts.rotate ? await ctx.client.post<HostKey>(path, undefined) : await ctx.client.get<HostKey>(path);
      if (opts.out !== undefined) await writePskFile(opts.out, k.identity, k.pskFileLine);
      if (opts.json) return ctx.out(json(k));
      ctx.out(opts.out !== undefined ? `${opts.rotate ? 'rotated and wrote' : 'wrote'} the key of ${k.identity} to ${opts.out}` : k.pskFileLine);
    });

  host
    .command('access')
    .description('show how the host reaches its copy over each exporter of the server: what it dials, how it proves itself, its sessions now')
    .argument('<id>', 'host id')
    .option('--json', 'print the raw JSON reply')
    .action(async (id, opts) => {
      const a = await ctx.client.get<HostAccess>(`/v1/hosts/${seg(id)}/access`);
      if (opts.json) return ctx.out(json(a));
      const lines = [`${a.hostId}: ${a.mapping ? `${a.mapping.source} → ${a.mapping.copyId}` : 'no copy mapped (prestage provision HOST SOURCE)'}`];
      for (const e of a.exporters) {
        const unit = e.exporter === 'iscsi' ? 'session' : 'connection';
        lines.push('', `${e.exporter}${e.serves ? ' (serves it)' : ''} · ${e.sessions} ${unit}${e.sessions === 1 ? '' : 's'} open`);
        const dial = e.access ? `${accessUri(e.access)}${e.access.kind === 'iscsi' ? ` (${iscsiLine(e.access)})` : ''}` : e.serves ? '- (no copy mapped)' : '- (another exporter serves it)';
        lines.push(...keyValues([['dial', dial], ['credential', e.credential]]).trimEnd().split('\n').map((l) => `  ${l}`));
      }
      ctx.out(`${lines.join('\n')}\n`);
    });

  host
    .command('iscsi-credential')
    .description("print the host's iSCSI login: initiator name, CHAP user and secret (for its NIC firmware or initiator)")
    .argument('<id>', 'host id')
    .option('--rotate', "make new CHAP secrets first (the host's iSCSI sessions end; the initiator name stays)")
    .option('--json', 'print the raw JSON reply')
    .action(async (id, opts) => {
      const path = `/v1/hosts/${seg(id)}/iscsi-credential`;
      const c = opts.rotate ? await ctx.client.post<IscsiCredential>(path, undefined) : await ctx.client.get<IscsiCredential>(path);
      if (opts.json) return ctx.out(json(c));
      const rows: [string, string][] = [['initiator', c.initiator], ['chap user', c.chapUser], ['chap secret', c.chapSecret]];
      if (c.mutualChapUser !== null) rows.push(['mutual user', c.mutualChapUser], ['mutual secret', c.mutualChapSecret ?? '']);
      ctx.out(keyValues(rows));
    });

  host
    .command('meta-url')
    .description("print the cloud-init NoCloud-net datasource line of the host: its own meta-data credential in the URL (not its NBD key)")
    .argument('<id>', 'host id')
    .option('--rotate', 'make a new meta-data credential first (the old one stops working)')
    .option('--base <url>', 'the API address as the host reaches it (default: --server)')
    .option('--url', 'print only the seed URL (with the credential), e.g. for curl "$(prestage host meta-url H --url)user-data"')
    .option('--json', 'print the raw JSON reply')
    .action(async (id, opts) => {
      const path = `/v1/hosts/${seg(id)}/meta-credential`;
      const c = opts.rotate ? await ctx.client.post<MetaCredential>(path, undefined) : await ctx.client.get<MetaCredential>(path);
      if (opts.json) return ctx.out(json(c));
      const base = new URL(opts.base ?? ctx.client.displayUrl);
      base.username = encodeURIComponent(c.user);
      base.password = c.secret;
      base.pathname = `${base.pathname.replace(/\/$/, '')}/v1/meta/${seg(c.hostId)}/`;
      ctx.out(opts.url ? base.href : `ds=nocloud-net;s=${base.href}`);
    });

  host
    .command('rm')
    .alias('remove')
    .description('remove a host (release it first)')
    .argument('<id>', 'host id')
    .option('--json', 'print {"removed": [ID]}')
    .action(async (id, opts) => {
      await ctx.client.delete(`/v1/hosts/${seg(id)}`);
      ctx.out(opts.json ? json({ removed: [id] }) : `removed host ${id}`);
    });

  return host;
}
