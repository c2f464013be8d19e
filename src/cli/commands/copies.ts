import { Command, Option, type CommandUnknownOpts } from '@commander-js/extra-typings';
import type { Copy } from '../../api/types.js';
import type { CliContext } from '../context.js';
import { bytes, dash, json, ms, percent, table, when, type Column } from '../format.js';
import { watch, watchOption } from '../watch.js';

const STATES = ['making', 'ready', 'mapped', 'releasing', 'gone', 'failed'] as const;

/** How far along a copy is: its progress while it is made, how long it took once it was. */
function progress(c: Copy): string {
  if (c.progress) return `${percent(c.progress.doneBytes, c.progress.totalBytes)} of ${bytes(c.progress.totalBytes)}`;
  return c.copyMs === null ? '-' : `made in ${ms(c.copyMs)}`;
}

export function copyTable(copies: readonly Copy[]): string {
  const columns: Column<Copy>[] = [
    { header: 'COPY', value: (c) => c.id },
    { header: 'STATE', value: (c) => c.state },
    { header: 'POOL', value: (c) => dash(c.pool) },
    { header: 'HOST', value: (c) => dash(c.hostId) },
    { header: 'PROGRESS', value: progress },
    { header: 'CREATED', value: (c) => when(c.createdAt) },
  ];
  // Only failed copies carry one; a column of dashes says nothing.
  if (copies.some((c) => c.error !== null)) columns.push({ header: 'ERROR', value: (c) => dash(c.error) });
  return table(copies, columns);
}

export function copiesCommand(ctx: CliContext): CommandUnknownOpts {
  return new Command('copies')
    .description('the copies, oldest first: spares ready, copies being made (and how far), copies mapped to hosts')
    .addOption(new Option('--state <state>', 'only copies in this state (gone ones are listed only so)').choices(STATES))
    .option('--json', 'print the raw JSON reply')
    .addOption(watchOption())
    .action(async (opts) => {
      const render = async () => {
        const copies = await ctx.client.list<Copy>(`/v1/copies${opts.state !== undefined ? `?state=${opts.state}` : ''}`);
        if (opts.json) return json(copies);
        return copies.length === 0 ? `no copies${opts.state !== undefined ? ` ${opts.state}` : ''}\n` : copyTable(copies);
      };
      if (opts.watch !== undefined) return watch(ctx, opts.watch, render);
      ctx.out(await render());
    });
}
