/**
 * `prestage completion bash|zsh`: written from the commander program, so every command, alias
 * and option is in it; both shells accept the scripts, and bash completes as a person expects.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { PassThrough } from 'node:stream';
import { before, describe, it } from 'node:test';
import type { CommandUnknownOpts } from '@commander-js/extra-typings';
import { bashCompletion, zshCompletion } from '../../src/cli/completion.js';
import { CliContext } from '../../src/cli/context.js';
import { buildProgram, runCli } from '../../src/cli/main.js';

interface Cmd {
  readonly path: string;
  readonly cmd: CommandUnknownOpts;
}

function commands(cmd: CommandUnknownOpts, path = ''): Cmd[] {
  return [{ path, cmd }, ...cmd.commands.flatMap((c) => commands(c, `${path}/${c.name()}`))];
}

/** The word list a script offers at `path`: its `case` arm for that command. */
function arm(script: string, path: string): string {
  const line = script.split('\n').find((l) => l.trimStart().startsWith(`'${path}') commands=`) || l.trimStart().startsWith(`('${path}') commands=`));
  assert.ok(line, `the script has an arm for '${path}'`);
  return line;
}

/** What bash offers for the words typed so far (the last one being completed). */
function bashComplete(script: string, words: readonly string[]): string[] {
  const quoted = words.map((w) => `'${w}'`).join(' ');
  const r = spawnSync('bash', ['-c', `${script}\nCOMP_WORDS=(${quoted}); COMP_CWORD=${words.length - 1}; _prestage; printf '%s\\n' "\${COMPREPLY[@]}"`], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.split('\n').filter((l) => l.length > 0).sort();
}

describe('shell completion', () => {
  let program: CommandUnknownOpts;
  let bash: string;
  let zsh: string;
  before(() => {
    const io = { stdout: new PassThrough(), stderr: new PassThrough(), env: {}, cwd: process.cwd() };
    program = buildProgram(new CliContext(io, () => ({})));
    bash = bashCompletion(program);
    zsh = zshCompletion(program);
  });

  it('names every command, alias and option, at the command it belongs to', () => {
    const all = commands(program);
    assert.ok(all.length > 30, `${all.length} commands`);
    // The program's options go with every command, but --version only with the program itself.
    const globals = program.options.flatMap((o) => [o.long, o.short]).filter((f): f is string => f !== undefined && f !== '--version' && f !== '-V');
    for (const script of [bash, zsh]) {
      for (const { path, cmd } of all) {
        const words = arm(script, path);
        for (const sub of cmd.commands) for (const name of [sub.name(), ...sub.aliases()]) assert.match(words, new RegExp(`[' (]${name}[ ':]`), `${path || 'prestage'}: subcommand ${name}`);
        const flags = [...cmd.options.flatMap((o) => [o.long, o.short]), ...globals, '-h', '--help'].filter((f): f is string => f !== undefined);
        for (const flag of flags) assert.match(words, new RegExp(`[' (]${flag}[ ':]`), `${path || 'prestage'}: option ${flag}`);
      }
    }
  });

  it('bash -n and zsh -n accept the scripts', () => {
    for (const [shell, script] of [['bash', bash], ['zsh', zsh]] as const) {
      const r = spawnSync(shell, ['-n'], { input: script, encoding: 'utf8' });
      assert.equal(r.status, 0, `${shell} -n: ${r.stderr}`);
    }
  });

  it('bash completes commands, aliases, options and option values', () => {
    assert.deepEqual(bashComplete(bash, ['prestage', 'po']), ['pool']);
    assert.deepEqual(bashComplete(bash, ['prestage', 'pool', 'l']), ['list', 'ls']);
    // A global option's value is skipped on the way to the command.
    assert.deepEqual(bashComplete(bash, ['prestage', '--server', 'http://h:1', 'pool', 'r']), ['remove', 'rm']);
    assert.deepEqual(bashComplete(bash, ['prestage', 'serve', '--driver', '']), ['file', 'rbd']);
    assert.deepEqual(bashComplete(bash, ['prestage', 'copies', '--state', 'ma']), ['making', 'mapped']);
    assert.deepEqual(bashComplete(bash, ['prestage', 'completion', '']), ['bash', 'zsh']);
    const eventOptions = bashComplete(bash, ['prestage', 'events', '--']);
    for (const o of ['--after', '--follow', '--json', '--server', '--help']) assert.ok(eventOptions.includes(o), `events --: ${o}`);
    // A value of its own kind (a URL, a file) is left to the shell's file completion.
    assert.deepEqual(bashComplete(bash, ['prestage', '--token-file', '']), []);
  });

  it('`prestage completion bash` prints the script it writes from the program', async () => {
    let out = '';
    const stdout = new PassThrough();
    stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    const code = await runCli(['completion', 'bash'], { stdout, stderr: new PassThrough(), env: {}, cwd: process.cwd() });
    assert.equal(code, 0);
    assert.equal(out, bash);
  });
});
