import { Command, type CommandUnknownOpts } from '@commander-js/extra-typings';
import type { CliContext } from '../context.js';
import { bytes, dash, json, keyValues, percent, table } from '../format.js';
import type { StatusReply } from '../replies.js';
import { poolTable } from './pool.js';

export function statusCommand(ctx: CliContext): CommandUnknownOpts {
  return new Command('status')
    .description('what the server holds and does: counts, copies in flight, pools')
    .option('--json', 'print the raw JSON reply')
    .action(async (opts) => {
      const s = await ctx.client.get<StatusReply>('/v1/status');
      if (opts.json) return ctx.out(json(s));
      const parts = [
        keyValues([
          ['server', `${ctx.client.displayUrl} (prestage ${s.version})`],
          ['data', s.dataDir],
          ['driver', s.driver],
          ['exporter', s.exporter],
          ['replenisher', s.replenisher],
          ['health', s.problems.length === 0 ? 'ok' : `degraded: ${s.problems.map((p) => p.message).join('; ')}`],
          ['images', String(s.images)],
          ['hosts', `${s.hosts} (${s.mapped} mapped, ${s.waitingProvisions} waiting for a copy)`],
        ]),
      ];
      parts.push(
        s.copiesInFlight.length === 0
          ? 'copies in flight: none\n'
          : 'copies in flight:\n' +
              table(s.copiesInFlight, [
                { header: 'COPY', value: (c) => c.copyId },
                { header: 'POOL', value: (c) => dash(c.pool) },
                { header: 'DONE', value: (c) => percent(c.doneBytes, c.totalBytes), align: 'right' },
                { header: 'BYTES', value: (c) => `${bytes(c.doneBytes)} / ${bytes(c.totalBytes)}`, align: 'right' },
              ]),
      );
      parts.push(s.pools.length === 0 ? 'pools: none\n' : 'pools:\n' + poolTable(s.pools));
      ctx.out(parts.join('\n'));
    });
}
