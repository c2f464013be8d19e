/**
 * `--watch [SECONDS]`: a command's output again every SECONDS until Ctrl-C, which ends it with
 * exit code 0. On a terminal each round is drawn over the last (as watch(1) does); into a pipe
 * or a file the rounds follow one another, a blank line apart.
 */
import { InvalidArgumentError, Option } from '@commander-js/extra-typings';
import { ApiError, UnreachableError } from './client.js';
import type { CliContext } from './context.js';
import { when } from './format.js';
import { pause } from './pause.js';

export const DEFAULT_WATCH_S = 2;

function watchSeconds(raw: string): number {
  const s = /^[0-9]*\.?[0-9]+$/.test(raw.trim()) ? Number(raw) : NaN;
  if (!(s >= 0.1 && s <= 86_400)) throw new InvalidArgumentError('expected seconds between rounds, from 0.1 to 86400, e.g. 2 or 0.5');
  return s;
}

/** The option as every watching command declares it: `--watch` alone is every DEFAULT_WATCH_S seconds. */
export function watchOption() {
  return new Option('--watch [seconds]', `show it again every SECONDS (default ${DEFAULT_WATCH_S}) until Ctrl-C`).argParser(watchSeconds).preset(String(DEFAULT_WATCH_S));
}

/** A failure one round may show and the next may not have: the server is away or busy for a moment. */
function passing(e: unknown): e is Error {
  return e instanceof UnreachableError || (e instanceof ApiError && e.status >= 500);
}

const CLEAR_SCREEN = '\x1b[2J';
const HOME = '\x1b[H';
const CLEAR_LINE_END = '\x1b[K';
const CLEAR_BELOW = '\x1b[J';
const HIDE_CURSOR = '\x1b[?25l';
const SHOW_CURSOR = '\x1b[?25h';

/** Renders and shows `render()` every `seconds` until Ctrl-C. Errors that say the request is wrong end it; a server away for a while is shown and tried again. */
export async function watch(ctx: CliContext, seconds: number, render: () => Promise<string>): Promise<void> {
  const stop = ctx.interruption();
  const terminal = ctx.io.stdout.isTTY === true;
  if (terminal) ctx.io.stdout.write(HIDE_CURSOR + CLEAR_SCREEN);
  try {
    for (let round = 0; !stop.aborted; round++) {
      let text: string;
      try {
        text = await render();
      } catch (e) {
        if (!passing(e)) throw e;
        text = `prestage: ${e.message}\n`;
      }
      if (stop.aborted) break;
      if (terminal) {
        const header = `every ${seconds} s · ${when(new Date().toISOString())} · Ctrl-C stops`;
        const lines = [header, '', ...text.replace(/\n$/, '').split('\n')];
        ctx.io.stdout.write(HOME + lines.map((l) => l + CLEAR_LINE_END).join('\n') + CLEAR_BELOW);
      } else {
        ctx.io.stdout.write((round > 0 ? '\n' : '') + (text.endsWith('\n') ? text : `${text}\n`));
      }
      await pause(seconds * 1000, stop);
    }
  } finally {
    if (terminal) ctx.io.stdout.write(`${SHOW_CURSOR}\n`);
  }
}
