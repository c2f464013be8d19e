// The dashboard in a real browser: `prestage serve` from dist/ (the page built by `npm run build`)
// and Debian's Chromium driven by playwright-core. What a person does on the page is what the
// tests do: sign in with a token, read the pools, provision and release a host, upload an image,
// mistype a value, watch the events come in. Screenshots land in test-artifacts/web/.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { launchBrowser, screenshot, type Browser } from '../helpers/browser.js';
import { makeTempDir, waitFor, writeRandomFile } from '../helpers/files.js';
import { startServe, type ServeProcess } from '../helpers/server.js';

/** Long enough for a refill under --copy-rate on a loaded 2-core machine; a bound, not a measure. */
const SLOW = 120_000;

describe('dashboard in Chromium', () => {
  let dir: string;
  let srv: ServeProcess;
  let browser: Browser;
  const tokens: Record<'reader' | 'operator', string> = { reader: '', operator: '' };

  before(async () => {
    dir = await makeTempDir();
    // Copies at 1 MiB/s: a refill of the 3 MiB image takes seconds, so the page can see a pool
    // run down and fill again. Every new name gets a pool of exactly 2 spares.
    srv = await startServe(join(dir, 'data'), ['--copy-rate', '1MiB', '--pool-min', '2', '--pool-max', '2']);
    for (const role of ['reader', 'operator'] as const) {
      const r = await srv.call<{ token: string }>('POST', '/v1/tokens', { name: `${role}-web`, role });
      assert.equal(r.status, 201);
      tokens[role] = r.body.token;
    }
    const image = join(dir, 'golden.raw');
    await writeRandomFile(image, 3 << 20);
    const up = await fetch(`${srv.url}/v1/images/golden`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${srv.token}`, 'content-type': 'application/octet-stream' },
      body: await readFile(image),
    });
    assert.equal(up.status, 201, await up.text());
    assert.equal((await srv.call('POST', '/v1/hosts', { id: 'web-01' })).status, 201);
    await waitFor('the pool of golden to hold 2 spares', async () => (await srv.call<{ ready: number }>('GET', '/v1/pools/golden')).body.ready === 2, SLOW, 200);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await srv?.kill('SIGTERM');
  });

  /** Opens the dashboard in a new tab and signs in with the keyboard, as a person would. */
  async function signIn(role: 'reader' | 'operator', viewport?: { width: number; height: number }) {
    const tab = await browser.newPage(viewport);
    await tab.page.goto(srv.url);
    await tab.page.getByLabel('API token').focus();
    await tab.page.keyboard.type(tokens[role]);
    await tab.page.keyboard.press('Enter');
    await tab.page.getByRole('heading', { name: 'Pools' }).waitFor();
    await poolRow(tab.page, 'golden').waitFor();
    return tab;
  }

  const poolRow = (page: Page, source: string) => page.locator(`tr[data-pool="${source}"]`);
  const readyOf = (page: Page, source: string) => poolRow(page, source).locator('td[data-col="ready"]');
  const hostRow = (page: Page, id: string) => page.locator(`tr[data-host="${id}"]`);

  it('loads with no console errors, with strict headers, and asks for a token', async () => {
    const tab = await browser.newPage();
    const res = await tab.page.goto(srv.url);
    assert.equal(res?.status(), 200);
    const headers = res?.headers() ?? {};
    assert.match(headers['content-security-policy'] ?? '', /default-src 'self'/);
    assert.match(headers['content-security-policy'] ?? '', /frame-ancestors 'none'/);
    assert.equal(headers['x-content-type-options'], 'nosniff');
    await tab.page.getByRole('heading', { name: 'Sign in' }).waitFor();
    // A wrong token is refused with the API's own message, and nothing else happens.
    await tab.page.getByLabel('API token').fill('pst_not-a-real-token');
    await tab.page.getByRole('button', { name: 'Sign in' }).click();
    await tab.page.getByRole('alert').filter({ hasText: 'needs a valid API token' }).waitFor();
    await screenshot(tab.page, 'sign-in');
    // The refused token's 401 is the one error the console may show.
    assert.deepEqual(
      tab.errors.filter((e) => !e.includes('401')),
      [],
    );
    await tab.page.close();
  });

  it('a reader token shows the pools, hosts and images, and no action at all', async () => {
    const { page, errors } = await signIn('reader');
    await hostRow(page, 'web-01').waitFor();
    await page.locator('tr[data-image="golden@1"]').waitFor();
    await page.getByRole('figure').filter({ hasText: 'Spares' }).waitFor();
    assert.equal(await readyOf(page, 'golden').textContent(), '2');
    const actions = page.getByRole('button', { name: /Provision|Release|Set policy|Upload|Add host|Rebuild/ });
    assert.equal(await actions.count(), 0, 'a reader gets no action buttons');
    assert.equal(await page.locator('form input[type="file"]').count(), 0, 'and no upload form');
    await screenshot(page, 'reader');
    assert.deepEqual(errors, []);
    await page.close();
  });

  it('an operator provisions a host from the page: the pool runs down and fills again; release works', async () => {
    const { page, errors } = await signIn('operator');
    // Every control the page offers has a name a screen reader says (the accessibility tree
    // lists an unnamed one by its role alone).
    const tree = await page.locator('body').ariaSnapshot();
    const unnamed = tree.split('\n').filter((l) => /^\s*- (textbox|combobox|button|spinbutton|checkbox|radio|slider)(?: \[[^\]]*\])?:?$/.test(l));
    assert.deepEqual(unnamed, [], tree);

    const row = hostRow(page, 'web-01');
    await row.getByRole('combobox').selectOption('golden');
    await row.getByRole('button', { name: 'Provision web-01' }).click();
    await page.getByRole('status').filter({ hasText: /web-01 got a copy of golden@1 \(warm/ }).waitFor();
    await row.locator('td[data-col="mapping"]').filter({ hasText: 'golden' }).waitFor();
    // The claim took a spare: the count falls to 1 ...
    await readyOf(page, 'golden').filter({ hasText: /^1$/ }).waitFor({ timeout: SLOW });
    await screenshot(page, 'operator-provisioned');
    // ... and the refill brings it back to the target.
    await readyOf(page, 'golden').filter({ hasText: /^2$/ }).waitFor({ timeout: SLOW });
    assert.equal((await srv.call<{ mapping: unknown }>('GET', '/v1/hosts/web-01')).body.mapping !== null, true);

    // Release asks first; Cancel changes nothing.
    await row.getByRole('button', { name: 'Release web-01' }).click();
    const dialog = page.getByRole('dialog', { name: 'Release web-01?' });
    await dialog.waitFor();
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    await dialog.waitFor({ state: 'detached' });
    assert.notEqual((await srv.call<{ mapping: unknown }>('GET', '/v1/hosts/web-01')).body.mapping, null);
    await row.getByRole('button', { name: 'Release web-01' }).click();
    await dialog.getByRole('button', { name: 'Release' }).click();
    await page.getByRole('status').filter({ hasText: 'web-01 released' }).waitFor();
    await row.locator('td[data-col="mapping"]').filter({ hasText: /^–$/ }).waitFor();
    assert.equal((await srv.call<{ mapping: unknown }>('GET', '/v1/hosts/web-01')).body.mapping, null);
    assert.deepEqual(errors, []);
    await page.close();
  });

  it('a bad input shows the API\'s error and changes nothing', async () => {
    const { page, errors } = await signIn('operator');
    const form = page.getByRole('form', { name: 'Add a host' });
    await form.getByLabel('Host id').fill('web-02');
    await form.getByLabel('MAC (optional)').fill('zz');
    await form.getByRole('button', { name: 'Add host' }).click();
    await form.getByRole('alert').filter({ hasText: "invalid MAC address 'zz': expected six hex pairs" }).waitFor();
    assert.equal((await srv.call('GET', '/v1/hosts/web-02')).status, 404);

    // A policy the API refuses: min above max.
    await poolRow(page, 'golden').getByRole('button', { name: 'Set policy of golden' }).click();
    const policy = page.getByRole('form', { name: 'Policy of golden' });
    await policy.getByLabel('Min', { exact: true }).fill('5');
    await policy.getByLabel('Max', { exact: true }).fill('1');
    await policy.getByRole('button', { name: 'Save policy' }).click();
    await policy.getByRole('alert').waitFor();
    const said = (await policy.getByRole('alert').textContent()) ?? '';
    assert.match(said, /min|max/i, said);
    await screenshot(page, 'bad-input');
    // The browser reports the two refusals (400) on its console; nothing else went wrong.
    assert.deepEqual(
      errors.filter((e) => !/status of 400/.test(e)),
      [],
    );
    await page.close();
  });

  it('the event list and the tables follow changes made elsewhere, without a reload', async () => {
    const { page, errors } = await signIn('reader');
    await page.getByRole('status').filter({ hasText: /Event log: live/ }).waitFor();
    let reloaded = false;
    page.on('load', () => (reloaded = true));
    assert.equal((await srv.call('POST', '/v1/hosts', { id: 'made-elsewhere' })).status, 201);
    await page.locator('ol.events li').filter({ hasText: 'host.added' }).filter({ hasText: 'made-elsewhere' }).waitFor();
    await hostRow(page, 'made-elsewhere').waitFor();
    assert.equal(reloaded, false);
    assert.deepEqual(errors, []);
    await page.close();
  });

  it('the simulator page replays a trace and shows the table and the plot', async () => {
    const { page, errors } = await signIn('reader');
    await page.getByRole('link', { name: 'Simulator' }).click();
    const csv = join(dir, 'demand.csv');
    const lines = ['time_s,source,count'];
    for (let t = 0; t < 6 * 3600; t += 97) lines.push(`${t},lab,${1 + (t % 3)}`, `${t + 40},build,1`);
    await writeFile(csv, `${lines.join('\n')}\n`);
    await page.getByLabel('a file of mine').check();
    await page.getByLabel('Trace file').setInputFiles(csv);
    await page.getByLabel('Policy 1').fill('static:2');
    await page.getByLabel('Policy 2').fill('predictive:0.99');
    await page.getByLabel('Hours scored (empty: all)').fill('');
    await page.getByRole('button', { name: 'Simulate' }).click();
    const table = page.locator('table.sim');
    await table.locator('tbody tr').nth(1).waitFor({ timeout: SLOW });
    assert.deepEqual(await table.locator('tbody th').allTextContents(), ['static:2', 'predictive:0.99']);
    await page.locator('figure.chart canvas').first().waitFor();
    await screenshot(page, 'simulator');

    // A policy the simulator does not know: its message, as `prestage simulate` would say it.
    await page.getByLabel('Policy 2').fill('sometimes:3');
    await page.getByRole('button', { name: 'Simulate' }).click();
    await page.getByRole('alert').filter({ hasText: "sometimes:3" }).waitFor();
    assert.deepEqual(
      errors.filter((e) => !/status of 400/.test(e)),
      [],
    );
    await page.close();
  });

  it('is readable on a phone', async () => {
    const { page, errors } = await signIn('operator', { width: 390, height: 844 });
    await page.getByRole('figure').filter({ hasText: 'Spares' }).waitFor();
    await screenshot(page, 'phone');
    // Nothing but the tables' own scrollers is wider than the screen.
    const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - window.innerWidth');
    const wide = await page.evaluate<string[]>(
      `[...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest('.scroll')).slice(0, 5).map((e) => e.outerHTML.slice(0, 100))`,
    );
    assert.ok(overflow <= 0, `the page is ${overflow} px wider than the screen: ${wide.join('\n')}`);
    assert.deepEqual(errors, []);
    await page.close();
  });

  it('an upload shows its progress, then the new version', async () => {
    const { page, errors } = await signIn('operator');
    const file = join(dir, 'golden-2.raw');
    await writeRandomFile(file, 24 << 20);
    // Slow the upload down (Chromium's own network throttling) so its progress has steps to show.
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 8 << 20 });
    // Every value the progress bar takes, recorded by the page itself (browser code, as text:
    // this file is typed for Node).
    await page.evaluate(`
      window.progressSeen = [];
      new MutationObserver(() => {
        const bar = document.querySelector('form[aria-labelledby="upload-h"] progress');
        if (bar) window.progressSeen.push(bar.value / bar.max);
      }).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
    `);
    const form = page.getByRole('form', { name: 'Upload an image' });
    await form.getByLabel('Name').fill('golden');
    await form.getByLabel('File (raw or qcow2)').setInputFiles(file);
    await form.getByRole('button', { name: 'Upload' }).click();
    await form.getByRole('status').filter({ hasText: /uploaded golden@2/ }).waitFor({ timeout: SLOW });
    await page.locator('tr[data-image="golden@2"]').waitFor();
    const seen = await page.evaluate<number[]>('window.progressSeen');
    assert.ok(
      seen.some((x) => x > 0 && x < 1),
      `the progress bar showed a step between empty and full: ${seen.map((x) => x.toFixed(2)).join(' ')}`,
    );
    await screenshot(page, 'uploaded');
    assert.deepEqual(errors, []);
    await page.close();
  });
});
