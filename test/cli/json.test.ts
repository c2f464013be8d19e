/** `--json` everywhere: on every command, as a global option, and for errors. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { CommandUnknownOpts } from '@commander-js/extra-typings';
import { buildProgram } from '../../src/cli/main.js';
import { CliContext, processIo } from '../../src/cli/context.js';
import { prestage } from '../helpers/cli-run.js';
import { makeTempDir } from '../helpers/files.js';
import { startServe, type ServeProcess } from '../helpers/server.js';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';

function leaves(cmd: CommandUnknownOpts, path: string[] = []): { path: string; cmd: CommandUnknownOpts }[] {
  const here = [...path, cmd.name()];
  if (cmd.commands.length === 0) return [{ path: here.join(' '), cmd }];
  return cmd.commands.flatMap((c) => leaves(c, here));
}

describe('--json', () => {
  let dir: string;
  let serve: ServeProcess;
  before(async () => {
    dir = await makeTempDir();
    serve = await startServe(join(dir, 'data'));
  });
  after(async () => {
    await serve.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
  });

  it('is an option of every command', () => {
    const program = buildProgram(new CliContext(processIo(), () => ({})));
    const all = leaves(program);
    assert.ok(all.length > 20, `found the commands (${all.length})`);
    const without = all.filter(({ cmd }) => !cmd.options.some((o) => o.long === '--json')).map((l) => l.path);
    assert.deepEqual(without, []);
  });

  it('works before the command as after it', async () => {
    const env = serve.env;
    const before = await prestage(['--json', 'host', 'add', 'j1'], { env });
    assert.equal(before.code, 0, before.stderr);
    assert.equal((JSON.parse(before.stdout) as { id: string }).id, 'j1');
    const list = await prestage(['--json', 'host', 'list'], { env });
    assert.deepEqual((JSON.parse(list.stdout) as { id: string }[]).map((h) => h.id), ['j1']);
  });

  it('prints errors as one JSON object on stderr, with the exit code', async () => {
    const env = serve.env;
    for (const [args, code, exit] of [
      [['--json', 'host', 'rm', 'ghost'], 'PRESTAGE_NOT_FOUND', 3],
      [['host', 'add', 'j1', '--json'], 'PRESTAGE_CONFLICT', 4],
      [['--json', 'host', 'add'], 'PRESTAGE_USAGE', 2],
      [['--json', 'no-such-command'], 'PRESTAGE_USAGE', 2],
    ] as const) {
      const r = await prestage(args, { env });
      assert.equal(r.code, exit, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stdout, '');
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      const body = JSON.parse(lines[0]!) as { error: { code: string; message: string; exitCode: number } };
      assert.equal(body.error.code, code);
      assert.equal(body.error.exitCode, exit);
      assert.ok(body.error.message.length > 5, body.error.message);
    }
  });
});
