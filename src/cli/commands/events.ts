import { Command, type CommandUnknownOpts } from '@commander-js/extra-typings';
import type { Event } from '../../api/types.js';
import { count } from '../args.js';
import type { CliContext } from '../context.js';
import { followEvents } from '../event-follow.js';
import { when } from '../format.js';

/** Events per request when listing the log (the API's default page). */
const PAGE = 1000;

/** `k=v` for each field of the event's data; strings as they are, the rest as JSON. */
function dataText(data: Event['data']): string {
  return Object.entries(data)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
}

/** One line an event, printed as it comes (a table would wait for the last row to size its columns). */
export function eventLine(e: Event): string {
  return [String(e.seq).padStart(6), when(e.at), e.type.padEnd(24), e.subject, dataText(e.data)].join('  ').trimEnd();
}

export function eventsCommand(ctx: CliContext): CommandUnknownOpts {
  return new Command('events')
    .description('the event log, oldest first: what changed, when, to what; --follow prints events as they happen')
    .option('--after <seq>', 'start after this event (its SEQ); default: the oldest kept, or with --follow the newest now', count)
    .option('-f, --follow', 'keep printing events as they come (Ctrl-C stops); a dropped connection is resumed where it left off')
    .option('--json', 'one JSON object an event, one a line')
    .action(async (opts) => {
      const print = (e: Event) => ctx.out(opts.json ? JSON.stringify(e) : eventLine(e));
      if (opts.follow) {
        await followEvents(ctx.client, {
          ...(opts.after !== undefined && { after: opts.after }),
          signal: ctx.interruption(),
          onEvent: print,
          onNotice: (text) => ctx.err(`prestage: ${text}`),
        });
        return;
      }
      for (let after = opts.after ?? 0; ; ) {
        const page = await ctx.client.get<readonly Event[]>(`/v1/events?after=${after}&limit=${PAGE}`);
        page.forEach(print);
        if (page.length < PAGE) return;
        after = page.at(-1)!.seq;
      }
    });
}
