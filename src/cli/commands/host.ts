import { Command, type CommandUnknownOpts } from '@commander-js/extra-typings';
import { label } from '../args.js';
import { seg } from '../client.js';
import type { CliContext } from '../context.js';
import { dash, json, labels, table, when } from '../format.js';
import type { HostReply } from '../replies.js';

export function hostCommand(ctx: CliContext): CommandUnknownOpts {
  const host = new Command('host').description('hosts: the machines copies are mapped to');

  host
    .command('add')
    .description('register a host')
    .argument('<id>', 'host id (A-Z, a-z, 0-9, . _ -)')
    .option('--mac <mac>', 'its MAC address, e.g. 52:54:00:12:34:56')
    .option('--label <key=value>', 'a label (repeatable)', label)
    .option('--json', 'print the raw JSON reply')
    .action(async (id, opts) => {
      const h = await ctx.client.post<HostReply>('/v1/hosts', {
        id,
        ...(opts.mac !== undefined && { mac: opts.mac }),
        ...(opts.label !== undefined && { labels: opts.label }),
      });
      ctx.out(opts.json ? json(h) : `added host ${h.id}${h.mac ? ` (mac ${h.mac})` : ''}`);
    });

  host
    .command('list')
    .alias('ls')
    .description('list hosts and what each is mapped to')
    .option('--json', 'print the raw JSON reply')
    .action(async (opts) => {
      const hosts = await ctx.client.get<HostReply[]>('/v1/hosts');
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
