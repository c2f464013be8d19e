import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { makeTempDir } from './files.js';

/** Debian's Chromium (scripts/install.sh installs it); playwright-core brings no browser of its own. */
export const CHROMIUM = '/usr/bin/chromium';

/** Where screenshots go: a test's output, never committed (.gitignore). */
export const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));

export interface Browser {
  readonly context: BrowserContext;
  /** A new tab: its own sessionStorage, so its own sign-in. */
  newPage(opts?: { width?: number; height?: number }): Promise<WatchedPage>;
  close(): Promise<void>;
}

export interface WatchedPage {
  readonly page: Page;
  /** Console errors and uncaught exceptions of the page so far. */
  readonly errors: string[];
}

/**
 * Headless Chromium on a profile of its own (a fresh user-data-dir, removed on close), with
 * nothing that reaches beyond this machine: no background networking, component updates or
 * first-run pages.
 */
export async function launchBrowser(): Promise<Browser> {
  const profile = await makeTempDir('prestage-chromium-');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
    viewport: { width: 1366, height: 900 },
  });
  return {
    context,
    async newPage(opts = {}) {
      const page = await context.newPage();
      if (opts.width !== undefined) await page.setViewportSize({ width: opts.width, height: opts.height ?? 844 });
      const errors: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(`console: ${m.text()}`);
      });
      page.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
      return { page, errors };
    },
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** Saves a full-page screenshot under test-artifacts/ (made if missing); returns its path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  const dir = join(ARTIFACTS, 'web');
  await mkdir(dir, { recursive: true });
  const path = join(dir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}
