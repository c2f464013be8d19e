import { Command, type CommandUnknownOpts } from '@commander-js/extra-typings';
import type { Status } from '../../api/types.js';
import type { CliContext } from '../context.js';
import { fitTable, truncate } from '../fit.js';
import { bytes, json, percent } from '../format.js';
import { watch, watchOption } from '../watch.js';
import { policyText } from './pool.js';

export interface StatusLayout {
  /** The server as the user named it. */
  readonly server: string;
  /** Characters a line; nothing goes past it. */
  readonly width: number;
  /** Lines of the screen: the lists are cut short to fit (each says how many it left out). */
  readonly height: number;
  /** Now, for "heartbeat 1.2 s ago". */
  readonly now: number;
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** Rows of `items` that fit `room` lines, and the line that says how many more there are. */
function fitRows<T>(items: readonly T[], room: number, more: (n: number) => string): { shown: readonly T[]; tail: string[] } {
  if (items.length <= room) return { shown: items, tail: [] };
  const shown = items.slice(0, Math.max(1, room - 1));
  return { shown, tail: [more(items.length - shown.length)] };
}

const seconds = (ms: number) => `${Math.max(0, ms / 1000).toFixed(1)} s`;

/**
 * The one-screen summary: health, what the server holds, its pools, its copies in flight and
 * the instances sharing its state, in `width` columns and about `height` lines. Long names are
 * cut in the middle (both ends tell pools apart), paths at their start; what does not fit says
 * where the rest is.
 */
export function renderStatus(s: Status, o: StatusLayout): string {
  const w = o.width;
  const out: string[] = [];
  const line = (text: string) => out.push(truncate(text, w));
  const health = s.problems.length === 0 ? 'ok' : `degraded: ${plural(s.problems.length, 'problem')}`;
  line(`${health} · prestage ${s.version} at ${o.server}`);
  line(`data ${truncate(s.dataDir, w - 'data '.length, 'start')}`);
  line(`driver ${s.driver} · exporter ${s.exporter}`);
  if (s.iscsi) {
    const restarts = s.iscsi.restarts > 0 ? ` (${plural(s.iscsi.restarts, 'restart')})` : '';
    line(`iscsi ${s.iscsi.portal} · tgtd ${s.iscsi.tgtd}${restarts} · ${plural(s.iscsi.exported, 'target')} · ${plural(s.iscsi.sessions.length, 'session')}`);
  }
  line(`replenisher ${s.replenisher} · images ${s.images} · hosts ${s.hosts} (${s.mapped} mapped, ${s.waitingProvisions} waiting)`);
  // The pools are what a screen is for: the other lists keep to a few lines and say what they left out.
  const problems = fitRows(s.problems, 2, (n) => `! and ${plural(n, 'more problem')} (prestage status --json)`);
  for (const p of problems.shown) line(`! ${p.message}`);
  problems.tail.forEach(line);

  // Each section: a blank line, a header, its rows; the pools take the lines the others leave.
  const inFlight = fitRows(s.copiesInFlight, 3, (n) => `… and ${n} more in flight (prestage copies --state making)`);
  const instances = fitRows(s.instances, 3, (n) => `… and ${plural(n, 'more instance')} (prestage status --json)`);
  const section = (rows: { shown: readonly unknown[]; tail: readonly string[] }) => (rows.shown.length > 0 ? 2 + rows.shown.length + rows.tail.length : 0);
  // iSCSI sessions get the lines left after 3 of pools (the status line above counts them all).
  const sessionRoom = Math.min(3, o.height - out.length - (2 + 3) - section(inFlight) - (2 + instances.shown.length + instances.tail.length) - 2 - 1);
  const sessions = fitRows(sessionRoom > 0 ? (s.iscsi?.sessions ?? []) : [], sessionRoom, (n) => `… and ${plural(n, 'more session')} (prestage status --json)`);
  const below = section(inFlight) + section(sessions) + 2 + instances.shown.length + instances.tail.length;
  const pools = fitRows(s.pools, Math.max(3, o.height - out.length - 2 - below - 1), (n) => `… and ${plural(n, 'more pool')} (prestage pool list)`);

  out.push('');
  if (s.pools.length === 0) line('no pools (make one: prestage pool set NAME --min N --max N)');
  else {
    out.push(
      fitTable(
        pools.shown,
        [
          // '!' marks a pool short of space (the problems above say more).
          { header: 'POOL', value: (p) => `${p.source}${p.shortage ? ' !' : ''}`, cut: 'middle', min: 16 },
          { header: 'READY', value: (p) => String(p.ready), align: 'right' },
          { header: 'TARGET', value: (p) => String(p.target), align: 'right' },
          { header: 'MAKING', value: (p) => String(p.making), align: 'right' },
          { header: 'MAPPED', value: (p) => String(p.mapped), align: 'right' },
          { header: 'POLICY', value: (p) => policyText(p.policy), cut: 'end', min: 10 },
        ],
        w,
      ).trimEnd(),
    );
    pools.tail.forEach(line);
  }
  if (s.copiesInFlight.length > 0) {
    out.push('');
    out.push(
      fitTable(
        inFlight.shown,
        [
          { header: 'COPY IN FLIGHT', value: (c) => c.copyId, cut: 'middle', min: 14, order: 2 },
          { header: 'POOL', value: (c) => c.pool ?? '- (on demand)', cut: 'middle', min: 12, order: 1 },
          { header: 'DONE', value: (c) => percent(c.doneBytes, c.totalBytes), align: 'right' },
          { header: 'BYTES', value: (c) => `${bytes(c.doneBytes)} / ${bytes(c.totalBytes)}`, align: 'right' },
        ],
        w,
      ).trimEnd(),
    );
    inFlight.tail.forEach(line);
  }
  if (sessions.shown.length > 0) {
    out.push('');
    out.push(
      fitTable(
        sessions.shown,
        [
          { header: 'ISCSI SESSION', value: (x) => x.hostId ?? '? (no host)', cut: 'middle', min: 13, order: 1 },
          { header: 'INITIATOR', value: (x) => x.initiator, cut: 'middle', min: 16, order: 2 },
          { header: 'FROM', value: (x) => x.address ?? '-', cut: 'end', min: 8 },
        ],
        w,
      ).trimEnd(),
    );
    sessions.tail.forEach(line);
  }
  out.push('');
  out.push(
    fitTable(
      instances.shown,
      [
        // '*': the instance that answered.
        { header: 'INSTANCE', value: (i) => `${i.name}${i.self ? ' *' : ''}`, cut: 'middle', min: 12, order: 2 },
        { header: 'STATE', value: (i) => (i.live ? 'live' : 'silent') },
        { header: 'HEARTBEAT', value: (i) => `${seconds(o.now - Date.parse(i.heartbeatAt))} ago`, align: 'right' },
        { header: 'LEADS', value: (i) => (i.pools.length === 0 ? '-' : `${i.pools.length}: ${i.pools.join(', ')}`), cut: 'end', min: 8, order: 1 },
      ],
      w,
    ).trimEnd(),
  );
  instances.tail.forEach(line);
  return `${out.join('\n')}\n`;
}

export function statusCommand(ctx: CliContext): CommandUnknownOpts {
  return new Command('status')
    .description('one screen: health, counts, pools, copies in flight, iSCSI sessions, the instances sharing the state (* = the one answering)')
    .option('--json', 'print the raw JSON reply')
    .addOption(watchOption())
    .action(async (opts) => {
      const render = async () => {
        const s = await ctx.client.get<Status>('/v1/status');
        if (opts.json) return json(s);
        const { columns, rows, isTTY } = ctx.io.stdout;
        // A terminal's own size; into a pipe, the classic 80 × 24.
        const width = isTTY === true && columns !== undefined ? columns : 80;
        // --watch draws a header and a blank line above it.
        const height = (isTTY === true && rows !== undefined ? rows : 24) - (opts.watch !== undefined ? 3 : 1);
        return renderStatus(s, { server: ctx.client.displayUrl, width, height, now: Date.now() });
      };
      if (opts.watch !== undefined) return watch(ctx, opts.watch, render);
      ctx.io.stdout.write(await render());
    });
}
