import { readFileSync } from 'node:fs';
import { Command, CommanderError, type CommandUnknownOpts } from '@commander-js/extra-typings';
import { isPrestageError } from '../domain/index.js';
import { ApiError, UnreachableError } from './client.js';
import { hostCommand } from './commands/host.js';
import { imageCommand } from './commands/image.js';
import { poolCommand } from './commands/pool.js';
import { provisionCommand, releaseCommand } from './commands/provision.js';
import { serveCommand } from './commands/serve.js';
import { simulateCommand } from './commands/simulate.js';
import { statusCommand } from './commands/status.js';
import { templateCommand } from './commands/template.js';
import { tokenCommand } from './commands/token.js';
import { CliContext, processIo, type CliIo } from './context.js';
import { EXIT_CODES, EXIT_OK, exitCodeFor } from './exit-codes.js';

/** This client's own version; the server's is in `prestage status`. */
const CLI_VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

function commandPath(cmd: CommandUnknownOpts): string {
  const names: string[] = [];
  for (let c: CommandUnknownOpts | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** Commander's settings are copied to subcommands made with `.command()` only; set them on every one. */
function configureTree(cmd: CommandUnknownOpts, io: CliIo): void {
  cmd.exitOverride();
  cmd.configureOutput({
    writeOut: (s) => io.stdout.write(s),
    writeErr: (s) => io.stderr.write(s),
    // One line, like every other error: "prestage: unknown option '--x' (see prestage pool set --help)".
    outputError: (s, write) => write(`prestage: ${s.replace(/^error: /, '').trim().replace(/\s*\n\s*/g, ' ')} (see '${commandPath(cmd)} --help')\n`),
  });
  for (const sub of cmd.commands) configureTree(sub, io);
}

export function buildProgram(ctx: CliContext): Command<[], { server?: string; token?: string; tokenFile?: string }> {
  const program = new Command('prestage')
    .description('golden images, warm pools of pre-made copies, and instant provisioning')
    .version(CLI_VERSION, '-V, --version')
    .option('--server <url>', 'the prestage server (default $PRESTAGE_URL or http://127.0.0.1:7480; for a private CA set NODE_EXTRA_CA_CERTS=ca.pem)')
    .option('--token <token>', 'API token (default $PRESTAGE_TOKEN, then --token-file, then the local server\'s DATA/admin.token)')
    .option('--token-file <file>', 'read the API token from a file (default $PRESTAGE_TOKEN_FILE)')
    .showSuggestionAfterError();
  for (const make of [serveCommand, imageCommand, templateCommand, poolCommand, hostCommand, provisionCommand, releaseCommand, statusCommand, simulateCommand, tokenCommand]) {
    program.addCommand(make(ctx));
  }
  return program;
}

/** The exit code and the one line to print for an error thrown by a command. */
export function describeError(e: unknown): { code: number; message: string | undefined } {
  if (e instanceof CommanderError) {
    // Commander printed it already (or printed help): only the exit code is left to choose.
    return { code: e.exitCode === 0 ? EXIT_OK : EXIT_CODES.PRESTAGE_USAGE, message: undefined };
  }
  if (e instanceof ApiError || e instanceof UnreachableError || isPrestageError(e)) return { code: exitCodeFor(e.code), message: e.message };
  return { code: EXIT_CODES.PRESTAGE_INTERNAL, message: e instanceof Error ? e.message : String(e) };
}

/** Runs one command line; resolves to its exit code. Errors are printed, never thrown. */
export async function runCli(argv: readonly string[], io: CliIo = processIo()): Promise<number> {
  const ctx = new CliContext(io, () => program.opts());
  const program = buildProgram(ctx);
  configureTree(program, io);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return EXIT_OK;
  } catch (e) {
    const { code, message } = describeError(e);
    if (message !== undefined) io.stderr.write(`prestage: ${message}\n`);
    return code;
  } finally {
    await ctx.close();
  }
}

/** The entry point of `bin/prestage.js`. */
export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  process.exitCode = await runCli(argv);
}
