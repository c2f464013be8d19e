import { Command, InvalidArgumentError, Option, type CommandUnknownOpts } from '@commander-js/extra-typings';
import { MISS_COST_LIMIT } from '../../domain/index.js';
import { count } from '../args.js';
import { seg } from '../client.js';
import type { CliContext } from '../context.js';
import { bytes, dash, json, table } from '../format.js';
import type { Pool } from '../../api/types.js';
import { watch, watchOption } from '../watch.js';

const percent = (x: number) => `${(Math.floor(x * 10_000) / 100).toString()} %`;

/** Hours as given, to three significant digits: 2, 0.5, 0.333, 8760. */
const hours = (h: number) => String(Number(h.toPrecision(3)));

/** `static 1..8`, `predictive 99.9 % 0..100`, `cost 2 h 0..100`. */
export function policyText(p: Pool['policy']): string {
  if (p.kind === 'predictive' && p.fillRate !== undefined) return `predictive ${percent(p.fillRate)} ${p.min}..${p.max}`;
  if (p.kind === 'cost' && p.missCostSpareHours !== undefined) return `cost ${hours(p.missCostSpareHours)} h ${p.min}..${p.max}`;
  return `${p.kind} ${p.min}..${p.max}`;
}

/** Warm requests per hour, precise where small: 0.04/h, 12.5/h, 310/h. */
export function perHour(x: number): string {
  return `${x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : Math.round(x).toString()}/h`;
}

/** What the last spare of the target buys; nothing to say of a pool that holds none. */
function lastSpare(p: Pool): string {
  const v = p.plan?.lastSpareHitsPerHour;
  return v === null || v === undefined || p.target === 0 ? '-' : perHour(v);
}

function seconds(s: number): string {
  return s < 1 ? `${Math.round(s * 1000)} ms` : s < 120 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`;
}

export function poolTable(pools: readonly Pool[]): string {
  return table(pools, [
    { header: 'SOURCE', value: (p) => p.source },
    { header: 'IMAGE', value: (p) => dash(p.image) },
    { header: 'POLICY', value: (p) => policyText(p.policy) },
    { header: 'TARGET', value: (p) => String(p.target), align: 'right' },
    { header: 'READY', value: (p) => String(p.ready), align: 'right' },
    { header: 'MAKING', value: (p) => String(p.making), align: 'right' },
    { header: 'MAPPED', value: (p) => String(p.mapped), align: 'right' },
    { header: 'REQ/H', value: (p) => (p.plan ? p.plan.requestsPerHour.toFixed(1) : '-'), align: 'right' },
    { header: 'COPY', value: (p) => (p.plan ? seconds(p.plan.leadTimeS) : '-'), align: 'right' },
    { header: 'FILL', value: (p) => (p.plan?.expectedFill != null ? percent(p.plan.expectedFill) : '-'), align: 'right' },
    { header: 'LAST SPARE', value: lastSpare, align: 'right' },
    { header: 'WHY', value: (p) => explain(p) },
  ]);
}

/** The plan's reason (a shortage of space first) and the pool's pre-warm events; LAST SPARE says what the budget weighed. */
function explain(p: Pool): string {
  if (!p.plan) return p.shortage ? `short of space: a copy needs ${bytes(p.shortage.neededBytes)}, ${bytes(p.shortage.freeBytes)} free` : '-';
  const parts = [p.plan.reason];
  if (p.prewarm.length > 0) parts.push(`pre-warm ${p.prewarm.join(', ')}`);
  return parts.join('; ');
}

function fillRate(raw: string): number {
  const v = raw.endsWith('%') ? Number(raw.slice(0, -1)) / 100 : Number(raw);
  if (!(v > 0 && v < 1)) throw new InvalidArgumentError('expected a share of requests to serve warm, e.g. 0.999 or 99.9%');
  return v;
}

/** `--cost 2` or `--cost 2h`: the spare-hours one cold wait is worth. */
function missCost(raw: string): number {
  const t = raw.trim().replace(/\s*h$/, '');
  const v = /^[0-9]*\.?[0-9]+$/.test(t) ? Number(t) : NaN;
  if (!(v > 0 && v <= MISS_COST_LIMIT)) {
    throw new InvalidArgumentError(`expected the hours of holding one spare that a cold wait costs, more than 0 and at most ${MISS_COST_LIMIT}, e.g. 2`);
  }
  return v;
}

export function poolCommand(ctx: CliContext): CommandUnknownOpts {
  const pool = new Command('pool').description('warm pools: how many spares of a source to keep ready');

  pool
    .command('set')
    .description('create or change the pool of SOURCE (NAME follows the latest version, NAME@N is pinned)')
    .argument('<source>', 'NAME or NAME@N')
    .option('--min <n>', 'spares to keep ready at least', count)
    .option('--max <n>', 'spares to keep at most', count)
    .addOption(new Option('--static', 'keep min spares ready (the default policy)').conflicts(['predictive', 'cost']))
    .addOption(
      new Option('--predictive [fill]', 'size the pool from its demand to serve this share of requests warm (default 0.999)').argParser(fillRate).conflicts('cost'),
    )
    .addOption(new Option('--cost <hours>', 'size the pool from its demand and costs: a cold wait costs as much as holding one spare HOURS long').argParser(missCost))
    .option('--prewarm <COUNT@HH:MM[/DAYS]>', 'known demand ahead (UTC), e.g. 300@09:00/mon-fri; repeatable, replaces the events', (v: string, prev: string[] = []) => [...prev, v])
    .option('--no-prewarm', 'remove every pre-warm event')
    .option('--json', 'print the raw JSON reply')
    .action(async (source, opts) => {
      const policy = opts.static ? 'static' : opts.predictive !== undefined ? 'predictive' : opts.cost !== undefined ? 'cost' : undefined;
      const p = await ctx.client.put<Pool>(`/v1/pools/${seg(source)}`, {
        ...(opts.min !== undefined && { min: opts.min }),
        ...(opts.max !== undefined && { max: opts.max }),
        ...(policy !== undefined && { policy }),
        ...(typeof opts.predictive === 'number' && { fillRate: opts.predictive }),
        ...(opts.cost !== undefined && { missCost: opts.cost }),
        ...(opts.prewarm === false ? { prewarm: [] } : Array.isArray(opts.prewarm) ? { prewarm: opts.prewarm } : {}),
      });
      ctx.out(opts.json ? json(p) : `pool ${p.source}: ${policyText(p.policy)} spares of ${dash(p.image)} (target ${p.target}, ready ${p.ready}, making ${p.making})${p.prewarm.length > 0 ? `; pre-warm ${p.prewarm.join(', ')}` : ''}`);
    });

  pool
    .command('list')
    .alias('ls')
    .description('list the pools and their spares')
    .option('--json', 'print the raw JSON reply')
    .addOption(watchOption())
    .action(async (opts) => {
      const render = async () => {
        const pools = await ctx.client.list<Pool>('/v1/pools');
        if (opts.json) return json(pools);
        return pools.length === 0 ? 'no pools (make one: prestage pool set NAME --min N --max N)\n' : poolTable(pools);
      };
      if (opts.watch !== undefined) return watch(ctx, opts.watch, render);
      ctx.out(await render());
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
