/**
 * Takes the README's picture of the dashboard under load: starts `prestage serve` (from dist/,
 * on a throwaway data directory), imports two images, sets their pools, registers hosts, then
 * provisions and releases them in a loop for a few minutes so the charts have something to show,
 * and screenshots the page as an operator sees it in headless Chromium.
 *
 *   npm run build && node --import tsx scripts/dashboard-screenshot.ts [--minutes 3] [--out docs/img/dashboard.png]
 *
 * Everything stays on this machine (loopback); the loop is bounded in time and stops by itself.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { launchBrowser } from '../test/helpers/browser.js';
import { makeTempDir, waitFor, writeRandomFile } from '../test/helpers/files.js';
import { startServe, type ServeProcess } from '../test/helpers/server.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');

const { values: args } = parseArgs({
  options: { minutes: { type: 'string', default: '3' }, out: { type: 'string', default: join(REPO, 'docs/img/dashboard.png') }, workers: { type: 'string', default: '4' } },
});
const MINUTES = Number(args.minutes);
const WORKERS = Number(args.workers);
const HOSTS = 12;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function must<T>(srv: ServeProcess, method: string, path: string, body?: unknown): Promise<T> {
  const r = await srv.call<T>(method, path, body);
  if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

async function upload(srv: ServeProcess, name: string, file: string): Promise<void> {
  const res = await fetch(`${srv.url}/v1/images/${name}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${srv.token}`, 'content-type': 'application/octet-stream' },
    body: await readFile(file),
  });
  if (res.status !== 201) throw new Error(`upload ${name}: ${res.status} ${await res.text()}`);
}

/**
 * Hosts come and go: each worker takes a free host, provisions it (mostly debian-12), keeps it
 * a few seconds and releases it, until the deadline.
 */
async function load(srv: ServeProcess, until: number): Promise<{ provisions: number; failures: number }> {
  const free = Array.from({ length: HOSTS }, (_, i) => `web-${String(i + 1).padStart(2, '0')}`);
  let provisions = 0;
  let failures = 0;
  const worker = async () => {
    while (Date.now() < until) {
      const host = free.shift();
      if (host === undefined) {
        await sleep(200);
        continue;
      }
      const source = Math.random() < 0.7 ? 'debian-12' : 'ubuntu-24.04';
      try {
        const r = await srv.call('POST', `/v1/hosts/${host}/provision`, { source });
        if (r.status === 200) provisions++;
        else failures++;
        await sleep(1500 + Math.random() * 5000);
        await srv.call('POST', `/v1/hosts/${host}/release`);
      } catch (e) {
        // A connection cut is one failed request; a server gone ends the run, with what it said.
        if (srv.child.exitCode !== null || srv.child.signalCode !== null) throw new Error(`prestage serve exited: ${srv.stderr()}`);
        console.error(`${host}: ${e instanceof Error ? `${e.message} (${String(e.cause)})` : String(e)}`);
        failures++;
      }
      free.push(host);
      // Bursts and lulls, so demand is not a flat line.
      await sleep(Math.random() < 0.2 ? 6000 : Math.random() * 800);
    }
  };
  await Promise.all(Array.from({ length: WORKERS }, worker));
  return { provisions, failures };
}

async function main(): Promise<void> {
  if (!existsSync(join(REPO, 'dist/web/index.html'))) throw new Error('dist/web/ is missing: run `npm run build` first');
  const dir = await makeTempDir('prestage-screenshot-');
  // Copies capped at 32 MiB/s: a 32 MiB copy (and its check) takes a couple of seconds, so a
  // burst runs a pool down for a while.
  const srv = await startServe(join(dir, 'data'), ['--copy-rate', '32MiB', '--copy-concurrency', '2']);
  try {
    const operator = (await must<{ token: string }>(srv, 'POST', '/v1/tokens', { name: 'ops-dashboard', role: 'operator' })).token;
    for (const [name, mib] of [
      ['debian-12', 32],
      ['ubuntu-24.04', 16],
    ] as const) {
      const file = join(dir, `${name}.raw`);
      await writeRandomFile(file, mib << 20);
      await upload(srv, name, file);
    }
    await must(srv, 'PUT', '/v1/pools/debian-12', { policy: 'static', min: 4, max: 6 });
    await must(srv, 'PUT', '/v1/pools/ubuntu-24.04', { policy: 'predictive', fillRate: 0.99, min: 1, max: 6 });
    for (let i = 1; i <= HOSTS; i++) {
      await must(srv, 'POST', '/v1/hosts', { id: `web-${String(i).padStart(2, '0')}`, mac: `52:54:00:00:00:${i.toString(16).padStart(2, '0')}`, labels: { rack: i <= 6 ? 'r1' : 'r2' } });
    }
    await waitFor('debian-12 to hold 4 spares', async () => (await srv.call<{ ready: number }>('GET', '/v1/pools/debian-12')).body.ready >= 4, 180_000, 500);

    const until = Date.now() + MINUTES * 60_000;
    console.log(`loading for ${MINUTES} min with ${WORKERS} workers over ${HOSTS} hosts…`);
    const running = load(srv, until);
    // The picture is taken near the end, with the load still on.
    await sleep(Math.max(0, until - Date.now() - 20_000));
    const browser = await launchBrowser();
    try {
      const { page, errors } = await browser.newPage({ width: 1440, height: 1200 });
      await page.goto(srv.url);
      await page.getByLabel('API token').fill(operator);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.locator('tr[data-pool="debian-12"]').waitFor();
      await page.getByLabel('Charts of').selectOption('debian-12');
      await page.locator('figure.chart canvas').nth(2).waitFor();
      // Give the charts and the event list a refresh to draw the latest samples.
      await sleep(3000);
      await mkdir(dirname(args.out), { recursive: true });
      await page.screenshot({ path: args.out });
      if (errors.length > 0) throw new Error(`the page reported errors: ${errors.join('; ')}`);
      console.log(`wrote ${args.out}`);
    } finally {
      await browser.close();
    }
    const { provisions, failures } = await running;
    console.log(`${provisions} provisions, ${failures} failed`);
    if (srv.stderr().trim() !== '') console.log(`the server said:\n${srv.stderr()}`);
  } finally {
    await srv.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
