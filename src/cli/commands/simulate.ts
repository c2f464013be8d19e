import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { Command, Option, type CommandUnknownOpts } from '@commander-js/extra-typings';
import { InputError, errnoCode, parseDuration, parseSize } from '../../domain/index.js';
import { parseBudget, parsePrewarmEvent, type Budget, type ForecastState, type PrewarmEvent } from '../../pool/policy/index.js';
import {
  busiestSources,
  demandBySource,
  parsePolicySpec,
  parseTraceText,
  policiesFor,
  seriesCsv,
  seriesSvg,
  simulate,
  trainForecasts,
  type PolicySpec,
  type SimulationResult,
  type Trace,
} from '../../pool/simulator/index.js';
import { count, positive } from '../args.js';
import type { CliContext } from '../context.js';
import { json, table } from '../format.js';

type Format = 'csv' | 'azure';

const AZURE_ATTRIBUTION = 'Azure Public Dataset V1, CC-BY-4.0';

async function loadTrace(ctx: CliContext, file: string, format: Format | undefined, seed: number): Promise<Trace> {
  const path = resolve(ctx.io.cwd, file);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new InputError(`cannot read trace ${file}: ${errnoCode(e) ?? (e instanceof Error ? e.message : String(e))}`, { file }, { cause: e });
  }
  return parseTraceText(text, file, seed, format);
}

const slug = (label: string) => label.replace(/[^A-Za-z0-9.]+/g, '-').replace(/^-|-$/g, '');

/** A wait, in the unit that reads best: 0 s, 4.2 s, 120 s, 45 min, 6.5 h, 3.2 d. */
export function waitTime(s: number): string {
  if (s === 0) return '0 s';
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 600) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 2 * 86_400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86_400).toFixed(1)} d`;
}

const percent2 = (x: number) => `${(x * 100).toFixed(2)} %`;

/** Instants over the budget and over a pool's bound, both of which must be 0: one column, spelled out when not. */
export function violations(r: Pick<SimulationResult, 'budgetViolations' | 'boundViolations'>): string {
  return r.budgetViolations === 0 && r.boundViolations === 0 ? '0' : `${r.budgetViolations} budget, ${r.boundViolations} bound`;
}

interface Row {
  readonly label: string;
  readonly r: SimulationResult;
}

export function simulationTable(rows: readonly Row[]): string {
  return table(rows, [
    { header: 'POLICY', value: (x) => x.label },
    { header: 'REQUESTS', value: (x) => String(x.r.requests), align: 'right' },
    { header: 'WARM', value: (x) => percent2(x.r.hitRate), align: 'right' },
    { header: 'P50 WAIT', value: (x) => waitTime(x.r.waitP50S), align: 'right' },
    { header: 'P99 WAIT', value: (x) => waitTime(x.r.waitP99S), align: 'right' },
    { header: 'MEAN SPARES', value: (x) => x.r.meanSpares.toFixed(1), align: 'right' },
    { header: 'PEAK SPARES', value: (x) => String(x.r.peakSpares), align: 'right' },
    { header: 'COPIES', value: (x) => String(x.r.copies), align: 'right' },
    { header: 'COPIES/REQ', value: (x) => x.r.copiesPerRequest.toFixed(2), align: 'right' },
    { header: 'DISCARDS', value: (x) => String(x.r.discards), align: 'right' },
    { header: 'VIOLATIONS', value: (x) => violations(x.r), align: 'right' },
  ]);
}

export function poolsTable(rows: readonly Row[]): string {
  const flat = rows.flatMap((x) => x.r.pools.map((p) => ({ label: x.label, p })));
  return table(flat, [
    { header: 'POLICY', value: (x) => x.label },
    { header: 'POOL', value: (x) => x.p.source },
    { header: 'REQUESTS', value: (x) => String(x.p.requests), align: 'right' },
    { header: 'WARM', value: (x) => percent2(x.p.hitRate), align: 'right' },
    { header: 'P99 WAIT', value: (x) => waitTime(x.p.waitP99S), align: 'right' },
    { header: 'MEAN TARGET', value: (x) => x.p.meanTarget.toFixed(1), align: 'right' },
    { header: 'MEAN SPARES', value: (x) => x.p.meanSpares.toFixed(1), align: 'right' },
    { header: 'PEAK SPARES', value: (x) => String(x.p.peakSpares), align: 'right' },
    { header: 'COPIES', value: (x) => String(x.p.copies), align: 'right' },
    { header: 'COPIES/REQ', value: (x) => x.p.copiesPerRequest.toFixed(2), align: 'right' },
    { header: 'DISCARDS', value: (x) => String(x.p.discards), align: 'right' },
  ]);
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function simulateCommand(ctx: CliContext): CommandUnknownOpts {
  return new Command('simulate')
    .description('replay a demand trace through the pool planner on a simulated clock and compare policies (no server needed)')
    .requiredOption('--trace <file>', 'the demand trace scored: CSV (time_s,source[,count]) or the Azure V1 binned format')
    .addOption(new Option('--format <format>', 'trace format (default: guessed from the first line)').choices(['csv', 'azure'] as const))
    .option('--train <file>', 'a trace the forecasters learn from first, without scoring (same format)')
    .option('--sources <list>', 'comma-separated sources to simulate (default: every source of the trace)')
    .option('--top <n>', 'simulate the N busiest sources (of --train when given, else of --trace)', positive)
    .option('--policy <spec>', 'static:N | static:SRC=N,… | static-share:N | predictive:FILL[,min=N,max=N] | cost:HOURS[,min=N,max=N] (a cold wait costs one spare held HOURS); repeatable (default predictive:0.999)', collect)
    .option('--budget <cap>', 'cap on all spares together: a number of copies (800) or a size (500GiB)')
    .option('--copy-size <size>', 'bytes of one copy, for a budget in bytes (default 1GiB)')
    .option('--lead-time <duration>', 'time to make one copy (default 120s)')
    .option('--concurrency <n>', 'copies in flight at once over all pools (default unlimited)', positive)
    .option('--tick <duration>', 'simulated time between planner runs when nothing happens (default 10s)')
    .option('--event <spec>', 'pre-warm event POOL:COUNT@HH:MM[/DAYS] (UTC), e.g. lab-desktop:300@09:00/mon-fri; repeatable', collect)
    .option('--seed <n>', 'seed of the spread of Azure batches over their 5-minute bin (default 1)', count)
    .option('--out <dir>', 'write <policy>.csv and <policy>.svg (demand, target and spares over time) into DIR')
    .option('--per-pool', 'also print one row per policy and pool')
    .option('--json', 'print the results as JSON')
    .action(async (opts) => {
      const seed = opts.seed ?? 1;
      const leadTimeS = parseDuration(opts.leadTime ?? '120s', 'lead-time') / 1000;
      if (!(leadTimeS > 0)) throw new InputError('lead-time must be more than 0', { field: 'lead-time' });
      const tickS = parseDuration(opts.tick ?? '10s', 'tick') / 1000;
      if (!(tickS > 0)) throw new InputError('tick must be more than 0', { field: 'tick' });
      const specs: PolicySpec[] = (opts.policy ?? ['predictive:0.999']).map(parsePolicySpec);
      const budget: Budget | null = opts.budget === undefined ? null : parseBudget(opts.budget);
      const sizeBytes = parseSize(opts.copySize ?? '1GiB', 'copy-size');
      const schedule: PrewarmEvent[] = (opts.event ?? []).map((e) => parsePrewarmEvent(e));

      const trace = await loadTrace(ctx, opts.trace, opts.format, seed);
      const train = opts.train === undefined ? null : await loadTrace(ctx, opts.train, opts.format, seed + 1);
      let sources: string[];
      if (opts.sources !== undefined) {
        sources = [...new Set(opts.sources.split(',').map((s) => s.trim()).filter((s) => s !== ''))];
        if (sources.length === 0) throw new InputError('--sources names no source', { field: 'sources' });
      } else if (opts.top !== undefined) {
        sources = busiestSources(train ?? trace, opts.top);
      } else {
        sources = busiestSources(trace, Infinity);
      }
      if (sources.length === 0) throw new InputError(`${opts.trace}: no arrivals to simulate`, { file: opts.trace });
      const unknown = sources.filter((s) => !trace.sources.includes(s) && !(train?.sources.includes(s) ?? false));
      if (unknown.length > 0) throw new InputError(`no arrivals for ${unknown.join(', ')} in ${opts.trace}${train ? ` or ${opts.train}` : ''}`, { sources: unknown });

      const forecasts: ReadonlyMap<string, ForecastState> | undefined = train ? trainForecasts(train, sources) : undefined;
      // static-share splits by the scored trace's own demand: hindsight that favours the static baseline.
      const demand = new Map(demandBySource(trace).map((d) => [d.source, d.requests]));
      const spanS = trace.end - trace.start;
      const bucketS = Math.max(300, Math.ceil(spanS / 3000 / 300) * 300);
      const rows: Row[] = [];
      for (const spec of specs) {
        const r = simulate({
          trace,
          sources,
          policyFor: policiesFor(spec, sources, demand),
          leadTimeS,
          concurrency: opts.concurrency ?? Infinity,
          tickS,
          budget,
          schedule,
          sizeBytes,
          ...(forecasts && { forecasts }),
          ...(opts.out !== undefined && { seriesBucketS: bucketS }),
        });
        rows.push({ label: spec.label, r });
      }

      const written: string[] = [];
      if (opts.out !== undefined) {
        const dir = resolve(ctx.io.cwd, opts.out);
        await mkdir(dir, { recursive: true });
        for (const { label, r } of rows) {
          if (!r.series) continue;
          const base = join(dir, slug(label));
          const title = `prestage simulate: ${label} on ${basename(opts.trace)} (lead time ${leadTimeS} s; warm ${percent2(r.hitRate)}, mean spares ${r.meanSpares.toFixed(1)})`;
          const footer = trace.format === 'azure' ? `data: ${AZURE_ATTRIBUTION}` : undefined;
          await writeFile(`${base}.csv`, seriesCsv(r.series));
          await writeFile(`${base}.svg`, seriesSvg(r.series, { title, ...(footer !== undefined && { footer }) }));
          written.push(`${base}.csv`, `${base}.svg`);
        }
      }

      if (opts.json) {
        ctx.out(
          json({
            trace: opts.trace,
            train: opts.train ?? null,
            sources,
            leadTimeS,
            concurrency: opts.concurrency ?? null,
            budget,
            results: rows.map(({ label, r }) => ({ policy: label, ...r, series: undefined })),
            files: written,
          }),
        );
        return;
      }
      const parts = [`${sources.length} pool${sources.length === 1 ? '' : 's'} (${sources.join(', ')}), lead time ${leadTimeS} s, ${opts.concurrency === undefined ? 'unlimited concurrency' : `concurrency ${opts.concurrency}`}${budget ? `, budget ${opts.budget}` : ''}${train ? `, learned on ${opts.train}` : ''}\n`, simulationTable(rows)];
      if (opts.perPool) parts.push(poolsTable(rows));
      if (trace.format === 'azure') parts.push(`trace: ${AZURE_ATTRIBUTION}\n`);
      if (written.length > 0) parts.push(`wrote ${written.join(', ')}\n`);
      ctx.out(parts.join('\n'));
    });
}
