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
import { demoImageCommand } from './commands/demo-image.js';
import { eventsCommand } from './commands/events.js';
import { copiesCommand } from './commands/copies.js';
import { completionCommand } from './commands/completion.js';
import { VERSION } from '../app/version.js';
import { CliContext, processIo, type CliIo } from './context.js';
import { EXIT_CODES, EXIT_OK, exitCodeFor } from './exit-codes.js';

/** This client's own version; the server's is in `prestage status`. */
const CLI_VERSION = VERSION;

function commandPath(cmd: CommandUnknownOpts): string {
  const names: string[] = [];
  for (let c: CommandUnknownOpts | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** Commander's settings are copied to subcommands made with `.command()` only; set them on every one. */
function configureTree(cmd: CommandUnknownOpts, io: CliIo, jsonErrors = false): void {
  cmd.exitOverride();
  cmd.configureOutput({
    writeOut: (s) => io.stdout.write(s),
    writeErr: (s) => io.stderr.write(s),
    // One line, like every other error: "prestage: unknown option '--x' (see prestage pool set --help)".
    // With --json the error goes out as JSON once parsing has failed (runCli).
    outputError: (s, write) => jsonErrors || write(`prestage: ${oneLine(s)} (see '${commandPath(cmd)} --help')\n`),
  });
  for (const sub of cmd.commands) configureTree(sub, io, jsonErrors);
}

export function buildProgram(ctx: CliContext): Command<[], { server?: string; token?: string; tokenFile?: string; json?: true }> {
  const program = new Command('prestage')
    .description('golden images, warm pools of pre-made copies, and instant provisioning')
    .version(CLI_VERSION, '-V, --version')
    .option('--server <url>', 'the prestage server (default $PRESTAGE_URL or http://127.0.0.1:7480; for a private CA set NODE_EXTRA_CA_CERTS=ca.pem)')
    .option('--token <token>', 'API token (default $PRESTAGE_TOKEN, then --token-file, then the local server\'s DATA/admin.token)')
    .option('--token-file <file>', 'read the API token from a file (default $PRESTAGE_TOKEN_FILE)')
    .option('--json', 'JSON for every command: replies on stdout, errors as {"error":{"code","message","exitCode"}} on stderr')
    .showSuggestionAfterError();
  // `prestage --json image list` is `prestage image list --json`: every command takes --json.
  program.hook('preAction', (_, action) => {
    if (program.opts().json) action.setOptionValue('json', true);
  });
  for (const make of [serveCommand, imageCommand, templateCommand, poolCommand, hostCommand, provisionCommand, releaseCommand, statusCommand, copiesCommand, eventsCommand, simulateCommand, tokenCommand, demoImageCommand, completionCommand]) {
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

/** Whether the command line asks for JSON (before or after the command), also for errors found while parsing it. */
function wantsJson(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end === -1 ? argv : argv.slice(0, end)).includes('--json');
}

/** The catalogue code of an error, as the JSON error object carries it. */
function errorCodeOf(e: unknown): string {
  if (e instanceof CommanderError) return e.exitCode === 0 ? 'OK' : 'PRESTAGE_USAGE';
  if (e instanceof ApiError || e instanceof UnreachableError || isPrestageError(e)) return e.code;
  return 'PRESTAGE_INTERNAL';
}

function oneLine(s: string): string {
  return s.replace(/^error: /, '').trim().replace(/\s*\n\s*/g, ' ');
}

function usageMessage(e: unknown): string {
  return e instanceof CommanderError ? oneLine(e.message) : String(e);
}

/** Runs one command line; resolves to its exit code. Errors are printed, never thrown. */
export async function runCli(argv: readonly string[], io: CliIo = processIo()): Promise<number> {
  const ctx = new CliContext(io, () => program.opts());
  const program = buildProgram(ctx);
  const jsonOut = wantsJson(argv);
  configureTree(program, io, jsonOut);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return EXIT_OK;
  } catch (e) {
    const { code, message } = describeError(e);
    if (jsonOut && code !== EXIT_OK) io.stderr.write(`${JSON.stringify({ error: { code: errorCodeOf(e), message: message ?? usageMessage(e), exitCode: code } })}\n`);
    else if (message !== undefined) io.stderr.write(`prestage: ${message}\n`);
    return code;
  } finally {
    await ctx.close();
  }
}

/** The entry point of `bin/prestage.js`. */
export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  process.exitCode = await runCli(argv);
}
