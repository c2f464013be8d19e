import { Argument, Command, type CommandUnknownOpts } from '@commander-js/extra-typings';
import { bashCompletion, zshCompletion } from '../completion.js';
import type { CliContext } from '../context.js';
import { json } from '../format.js';

export function completionCommand(ctx: CliContext): CommandUnknownOpts {
  return new Command('completion')
    .description('print the shell completion script: commands, options and their values complete on Tab')
    .addArgument(new Argument('<shell>', 'bash or zsh').choices(['bash', 'zsh'] as const))
    .addHelpText(
      'after',
      `
Load it where your shell starts:
  bash (~/.bashrc):                 source <(prestage completion bash)
  zsh  (~/.zshrc, after compinit):  source <(prestage completion zsh)`,
    )
    .option('--json', 'print {"shell", "script"}')
    .action((shell, opts, cmd) => {
      // Written from the whole program, so it lists exactly the commands and options there are.
      let program: CommandUnknownOpts = cmd;
      while (program.parent) program = program.parent;
      const script = shell === 'bash' ? bashCompletion(program) : zshCompletion(program);
      ctx.io.stdout.write(opts.json ? json({ shell, script }) : script);
    });
}
