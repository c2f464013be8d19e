import { Command, type CommandUnknownOpts } from '@commander-js/extra-typings';
import { count } from '../args.js';
import { seg } from '../client.js';
import type { CliContext } from '../context.js';
import { dash, json, table } from '../format.js';
import type { PoolReply } from '../replies.js';

export function poolTable(pools: readonly PoolReply[]): string {
  return table(pools, [
    { header: 'SOURCE', value: (p) => p.source },
    { header: 'IMAGE', value: (p) => dash(p.image) },
    { header: 'POLICY', value: (p) => `${p.policy.kind} ${p.policy.min}..${p.policy.max}` },
    { header: 'TARGET', value: (p) => String(p.target), align: 'right' },
    { header: 'READY', value: (p) => String(p.ready), align: 'right' },
    { header: 'MAKING', value: (p) => String(p.making), align: 'right' },
    { header: 'MAPPED', value: (p) => String(p.mapped), align: 'right' },
  ]);
}

export function poolCommand(ctx: CliContext): CommandUnknownOpts {
  const pool = new Command('pool').description('warm pools: how many spares of a source to keep ready');

  pool
    .command('set')
    .description('create or change the pool of SOURCE (NAME follows the latest version, NAME@N is pinned)')
    .argument('<source>', 'NAME or NAME@N')
    .option('--min <n>', 'spares to keep ready at least', count)
    .option('--max <n>', 'spares to keep at most', count)
    .option('--json', 'print the raw JSON reply')
    .action(async (source, opts) => {
      const p = await ctx.client.put<PoolReply>(`/v1/pools/${seg(source)}`, {
        ...(opts.min !== undefined && { min: opts.min }),
        ...(opts.max !== undefined && { max: opts.max }),
      });
      ctx.out(opts.json ? json(p) : `pool ${p.source}: ${p.policy.min}..${p.policy.max} spares of ${dash(p.image)} (target ${p.target}, ready ${p.ready}, making ${p.making})`);
    });

  pool
    .command('list')
    .alias('ls')
    .description('list the pools and their spares')
    .option('--json', 'print the raw JSON reply')
    .action(async (opts) => {
      const pools = await ctx.client.get<PoolReply[]>('/v1/pools');
      if (opts.json) return ctx.out(json(pools));
      ctx.out(pools.length === 0 ? 'no pools (make one: prestage pool set NAME --min N --max N)' : poolTable(pools));
    });

  pool
    .command('rm')
    .alias('remove')
    .description('remove the pool of SOURCE (its spares are removed; mapped copies stay)')
    .argument('<source>', 'NAME or NAME@N')
    .option('--json', 'print {"removed": [SOURCE]}')
    .action(async (source, opts) => {
      await ctx.client.delete(`/v1/pools/${seg(source)}`);
      ctx.out(opts.json ? json({ removed: [source] }) : `removed pool ${source}`);
    });

  return pool;
}
