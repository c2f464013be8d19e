import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { waitTime } from '../../src/cli/commands/simulate.js';
import { runCli } from '../../src/cli/main.js';
import { makeTempDir } from '../helpers/files.js';

class Sink extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.text += chunk.toString('utf8');
    done();
  }
}

async function prestage(cwd: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new Sink();
  const stderr = new Sink();
  const code = await runCli(args, { stdout, stderr, env: {}, cwd });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

describe('prestage simulate', () => {
  let dir: string;
  before(async () => {
    dir = await makeTempDir('prestage-simulate-');
    // A day of demand for two sources, some in batches.
    const rows = ['time_s,source,count'];
    for (let t = 0; t < 86_400; t += 97) rows.push(`${t},web,${t % 7 === 0 ? 5 : 1}`);
    for (let t = 13; t < 86_400; t += 311) rows.push(`${t},db`);
    await writeFile(join(dir, 'demand.csv'), rows.join('\n') + '\n');
    await writeFile(join(dir, 'bad.csv'), 'time_s,source\n10,web\n20,web,-3\n');
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('prints one row per policy', async () => {
    const r = await prestage(dir, 'simulate', '--trace', 'demand.csv', '--policy', 'static:3', '--policy', 'predictive:0.99', '--policy', 'cost:2,max=50', '--lead-time', '2m');
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^2 pools \(web, db\), lead time 120 s, unlimited concurrency$/);
    assert.match(lines[2]!, /^POLICY\s+REQUESTS\s+WARM\s+P50 WAIT\s+P99 WAIT\s+MEAN SPARES\s+PEAK SPARES\s+COPIES\s+COPIES\/REQ\s+DISCARDS\s+VIOLATIONS$/);
    assert.match(lines[3]!, /^static:3\s+\d+\s+\d+\.\d\d %/);
    assert.match(lines[4]!, /^predictive:0\.99\s+\d+\s+\d+\.\d\d %/);
    assert.match(lines[5]!, /^cost:2,max=50\s+\d+\s+\d+\.\d\d %/);
    // A static pool makes a copy per request and discards none; nothing exceeds a bound (no budget here).
    assert.match(lines[3]!, /\s\d+\s+1\.00\s+0\s+0$/);
    for (const line of lines.slice(4)) assert.match(line, /\s\d+\.\d\d\s+\d+\s+0$/);
    assert.equal(lines.length, 6);
  });

  it('prints copies per request and discards per pool, and budget and bound violations (none) within a budget', async () => {
    const r = await prestage(dir, 'simulate', '--trace', 'demand.csv', '--policy', 'predictive:0.999', '--policy', 'cost:4', '--budget', '3', '--per-pool');
    assert.equal(r.code, 0, r.stderr);
    const [, , header, predictive, cost, , poolHeader, ...pools] = r.stdout.trimEnd().split('\n');
    assert.match(header!, /COPIES\/REQ\s+DISCARDS\s+VIOLATIONS$/);
    assert.match(predictive!, /^predictive:0\.999\s.*\s0$/);
    assert.match(cost!, /^cost:4\s.*\s0$/);
    assert.match(poolHeader!, /^POLICY\s+POOL\s+REQUESTS\s+WARM\s+P99 WAIT\s+MEAN TARGET\s+MEAN SPARES\s+PEAK SPARES\s+COPIES\s+COPIES\/REQ\s+DISCARDS$/);
    assert.deepEqual(
      pools.map((l) => l.split(/\s+/).slice(0, 2).join(' ')),
      ['predictive:0.999 web', 'predictive:0.999 db', 'cost:4 web', 'cost:4 db'],
    );
    for (const l of pools) assert.match(l, /\s\d+\s+\d+\.\d\d\s+\d+$/);
    // Peak spares within the budget of 3, in the table as in the counts.
    for (const l of [predictive!, cost!]) assert.ok(Number(l.split(/\s+/)[8]) <= 3, l);
  });

  it('writes the CSV and the SVG with --out, and answers JSON with --json', async () => {
    const r = await prestage(dir, 'simulate', '--trace', 'demand.csv', '--sources', 'web', '--policy', 'predictive:0.999', '--out', 'plots', '--json');
    assert.equal(r.code, 0, r.stderr);
    type Score = { requests: number; copies: number; discards: number; copiesPerRequest: number; boundViolations: number };
    const body = JSON.parse(r.stdout) as {
      sources: string[];
      results: (Score & { policy: string; hitRate: number; peakSpares: number; budgetViolations: number; series?: unknown; pools: (Score & { source: string })[] })[];
      files: string[];
    };
    assert.deepEqual(body.sources, ['web']);
    const [result] = body.results;
    assert.equal(result!.policy, 'predictive:0.999');
    assert.equal(result!.series, undefined);
    assert.equal(result!.copiesPerRequest, result!.copies / result!.requests);
    assert.deepEqual([result!.boundViolations, result!.budgetViolations], [0, 0]);
    assert.ok(Number.isInteger(result!.discards) && Number.isInteger(result!.peakSpares));
    assert.deepEqual(
      result!.pools.map((p) => [p.source, p.copiesPerRequest, p.discards, p.boundViolations]),
      [['web', result!.copiesPerRequest, result!.discards, 0]],
    );
    assert.deepEqual(body.files, [join(dir, 'plots', 'predictive-0.999.csv'), join(dir, 'plots', 'predictive-0.999.svg')]);
    const csv = await readFile(join(dir, 'plots', 'predictive-0.999.csv'), 'utf8');
    assert.match(csv, /^time_s,web_demand,web_target,web_spares\n/);
    const svg = await readFile(join(dir, 'plots', 'predictive-0.999.svg'), 'utf8');
    assert.match(svg, /<svg /);
    assert.doesNotMatch(svg, /Azure/, 'the Azure attribution only goes on Azure data');
  });

  it('fails with FILE:LINE on a bad trace line, and exit code 2', async () => {
    const r = await prestage(dir, 'simulate', '--trace', 'bad.csv');
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, "prestage: bad.csv:3: count '-3' is not a whole number ≥ 1\n");
  });

  it('says what is wrong with its options', async () => {
    const cases: [string[], RegExp][] = [
      [['--trace', 'missing.csv'], /^prestage: cannot read trace missing\.csv: ENOENT\n$/],
      [['--trace', 'demand.csv', '--policy', 'predictive:2'], /fill rate '2' must be a number between 0 and 1/],
      [['--trace', 'demand.csv', '--policy', 'cost:0'], /policy 'cost:0': miss cost '0' must be the hours of holding one spare that a cold wait costs, more than 0/],
      [['--trace', 'demand.csv', '--policy', 'cost:2,min=3,max=1'], /min \(3\) must not exceed max \(1\)/],
      [['--trace', 'demand.csv', '--budget', 'lots'], /budget: cannot read 'lots'/],
      [['--trace', 'demand.csv', '--sources', 'nope'], /no arrivals for nope in demand\.csv/],
      [['--trace', 'demand.csv', '--event', 'web:5@9'], /event: cannot read 'web:5@9'/],
      [['--trace', 'demand.csv', '--lead-time', 'soon'], /lead-time: cannot read 'soon' as a duration/],
    ];
    for (const [args, message] of cases) {
      const r = await prestage(dir, 'simulate', ...args);
      assert.equal(r.code, 2, args.join(' '));
      assert.match(r.stderr, message);
    }
  });

  it('formats waits in a unit that reads well', () => {
    assert.deepEqual([0, 4.25, 120, 2700, 23_400, 276_480].map(waitTime), ['0 s', '4.3 s', '120 s', '45 min', '6.5 h', '3.2 d']);
  });
});
