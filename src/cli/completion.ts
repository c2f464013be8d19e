/**
 * Shell completion for bash and zsh, written from the commander program itself: its commands,
 * their aliases, their options and the values an option allows. Nothing is listed by hand, so a
 * new command or option completes as soon as it exists.
 *
 * Both scripts walk the words typed so far to find the command being completed (skipping
 * options and the values of those that take one), then offer its subcommands, or its options
 * (and the global ones) after a '-', or an option's allowed values after it. Anything else
 * (file arguments) falls back to the shell's file completion.
 */
import type { CommandUnknownOpts, Option } from '@commander-js/extra-typings';

interface OptionInfo {
  /** `-f` and `--follow`, as they are typed. */
  readonly flags: readonly string[];
  /** It takes a value (`--server <url>`): the next word is that. */
  readonly takesValue: boolean;
  readonly choices: readonly string[];
  readonly description: string;
}

interface CommandNode {
  /** `''` for the program, `/pool/list` for `prestage pool list`. */
  readonly path: string;
  readonly description: string;
  /** Names it is typed by: its name, then its aliases. */
  readonly names: readonly string[];
  readonly children: readonly CommandNode[];
  readonly options: readonly OptionInfo[];
  /** The values its first argument allows (`completion bash|zsh`). */
  readonly argChoices: readonly string[];
}

/** Commander adds these to every command; they are in no command's option list. */
const HELP: OptionInfo = { flags: ['-h', '--help'], takesValue: false, choices: [], description: 'show help' };

/** What a script may hold unquoted: our own command, option and choice names are all of this kind. */
const WORD = /^[A-Za-z0-9][A-Za-z0-9._@:-]*$|^--?[A-Za-z0-9][A-Za-z0-9-]*$/;

function word(w: string): string {
  if (!WORD.test(w)) throw new Error(`completion: '${w}' is not a plain word`);
  return w;
}

function optionInfo(o: Option): OptionInfo {
  return {
    flags: [o.short, o.long].filter((f): f is string => f !== undefined).map(word),
    // `--watch [seconds]`: what follows may as well be the next word, so only a required value is skipped and completed.
    takesValue: o.required,
    choices: (o.argChoices ?? []).map(word),
    description: o.description,
  };
}

function tree(cmd: CommandUnknownOpts, path: string): CommandNode {
  return {
    path,
    description: cmd.description(),
    names: [cmd.name(), ...cmd.aliases()].map(word),
    children: cmd.commands.map((c) => tree(c, `${path}/${c.name()}`)),
    options: [...cmd.options.filter((o) => !o.hidden).map(optionInfo), HELP],
    argChoices: (cmd.registeredArguments[0]?.argChoices ?? []).map(word),
  };
}

function nodes(n: CommandNode): CommandNode[] {
  return [n, ...n.children.flatMap(nodes)];
}

/** The program's options with those of each command (a command's own first, no flag twice). */
function optionsAt(n: CommandNode, globals: readonly OptionInfo[]): OptionInfo[] {
  const seen = new Set(n.options.flatMap((o) => o.flags));
  return [...n.options, ...globals.filter((g) => !g.flags.some((f) => seen.has(f)))];
}

/** First sentence, short: a description as a completion menu shows it. */
function short(text: string): string {
  const first = text.split(/[;(]|: /)[0]!.trim();
  return first.length > 60 ? `${first.slice(0, 59)}…` : first;
}

function programTree(program: CommandUnknownOpts): { all: CommandNode[]; globals: OptionInfo[] } {
  const root = tree(program, '');
  // -V and --version belong to the program only, as the rest of its options do everywhere.
  const version = { flags: ['-V', '--version'], takesValue: false, choices: [], description: 'show the version' };
  const rootWithVersion = { ...root, options: [...root.options.filter((o) => !o.flags.includes('--version')), version] };
  const globals = root.options.filter((o) => o !== HELP && !o.flags.includes('--version'));
  return { all: [rootWithVersion, ...root.children.flatMap(nodes)], globals };
}

/** `case` arms that move from a command to a subcommand (an alias leads to the command's own path). */
function stepArms(all: readonly CommandNode[], quote: (s: string) => string, arm: (patterns: string, body: string) => string): string[] {
  return all.flatMap((n) => n.children.map((c) => arm(c.names.map((name) => quote(`${n.path}/${name}`)).join('|'), `cmdpath=${quote(c.path)}`)));
}

/** The values of options that take one, by command: what the walk skips and what completes after them. */
function valueOptions(all: readonly CommandNode[], globals: readonly OptionInfo[]) {
  // The program's own are the global ones, taken anywhere.
  const local = all
    .filter((n) => n.path !== '')
    .flatMap((n) => n.options.filter((o) => o.takesValue).flatMap((o) => o.flags.map((f) => ({ path: n.path, flag: f, choices: o.choices }))));
  const global = globals.filter((o) => o.takesValue).flatMap((o) => o.flags.map((f) => ({ flag: f, choices: o.choices })));
  return { local, global };
}

export function bashCompletion(program: CommandUnknownOpts): string {
  const { all, globals } = programTree(program);
  const name = program.name();
  const fn = `_${name.replace(/-/g, '_')}`;
  const q = (s: string) => `'${s}'`;
  const values = valueOptions(all, globals);
  const takesValue = [...values.local.map((v) => q(`${v.path} ${v.flag}`)), ...values.global.map((v) => `*${q(` ${v.flag}`)}`)];
  // An option's value: the values it allows, else (no reply) the shell's file completion.
  const valueArm = (pattern: string, choices: readonly string[]) => `    ${pattern}) ${choices.length > 0 ? `COMPREPLY=($(compgen -W ${q(choices.join(' '))} -- "$cur")); ` : ''}return ;;`;
  const valueArms = [...values.local.map((v) => valueArm(q(`${v.path} ${v.flag}`), v.choices)), ...values.global.map((v) => valueArm(`*${q(` ${v.flag}`)}`, v.choices))];
  const wordArms = all.map((n) => {
    const commands = [...n.children.flatMap((c) => c.names), ...n.argChoices];
    const options = optionsAt(n, globals).flatMap((o) => o.flags);
    return `    ${q(n.path)}) commands=${q(commands.join(' '))}; options=${q(options.join(' '))} ;;`;
  });
  return `# bash completion for ${name}, written by \`${name} completion bash\` from its commands.
# Load it in ~/.bashrc:  source <(${name} completion bash)
# or save it once:       ${name} completion bash > /etc/bash_completion.d/${name}
${fn}() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]}
  local cmdpath='' w i skip=0 commands='' options=''
  # The command typed so far: words that name a subcommand, past options and their values.
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=\${COMP_WORDS[i]}
    if ((skip)); then skip=0; continue; fi
    case "$w" in
      -*=*) continue ;;
      -*)
        case "$cmdpath $w" in
          ${takesValue.join('|') || "''"}) skip=1 ;;
        esac
        continue ;;
    esac
    case "$cmdpath/$w" in
${stepArms(all, q, (p, body) => `      ${p}) ${body} ;;`).join('\n')}
    esac
  done
  # The value of an option.
  if [[ $cur != -* ]]; then
    case "$cmdpath $prev" in
${valueArms.join('\n')}
    esac
  fi
  case "$cmdpath" in
${wordArms.join('\n')}
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$options" -- "$cur"))
  elif [[ -n $commands ]]; then
    COMPREPLY=($(compgen -W "$commands" -- "$cur"))
  fi
}
complete -o default -F ${fn} ${name}
`;
}

/** A single-quoted zsh word (an embedded quote closes, escapes and reopens). */
const zq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

export function zshCompletion(program: CommandUnknownOpts): string {
  const { all, globals } = programTree(program);
  const name = program.name();
  const fn = `_${name.replace(/-/g, '_')}`;
  const values = valueOptions(all, globals);
  const takesValue = [...values.local.map((v) => zq(`${v.path} ${v.flag}`)), ...values.global.map((v) => `*${zq(` ${v.flag}`)}`)];
  const valueArm = (pattern: string, choices: readonly string[]) => `    (${pattern}) ${choices.length > 0 ? `compadd -- ${choices.join(' ')}` : '_files'}; return ;;`;
  const valueArms = [...values.local.map((v) => valueArm(zq(`${v.path} ${v.flag}`), v.choices)), ...values.global.map((v) => valueArm(`*${zq(` ${v.flag}`)}`, v.choices))];
  // _describe reads NAME:DESCRIPTION; a colon in a name would end it.
  const entry = (w: string, description: string) => zq(`${w.replace(/:/g, '\\:')}:${short(description)}`);
  const wordArms = all.map((n) => {
    const commands = [...n.children.flatMap((c) => c.names.map((nm) => entry(nm, c.description))), ...n.argChoices.map((v) => entry(v, v))];
    const options = optionsAt(n, globals).flatMap((o) => o.flags.map((f) => entry(f, o.description)));
    return `    (${zq(n.path)}) commands=(${commands.join(' ')}); options=(${options.join(' ')}) ;;`;
  });
  return `#compdef ${name}
# zsh completion for ${name}, written by \`${name} completion zsh\` from its commands.
# Load it in ~/.zshrc, after compinit:  source <(${name} completion zsh)
# or save it as ${fn} in a directory of $fpath.
${fn}() {
  local cmdpath='' w i skip=0
  local -a commands options
  # The command typed so far: words that name a subcommand, past options and their values.
  for ((i = 2; i < CURRENT; i++)); do
    w=\${words[i]}
    if ((skip)); then skip=0; continue; fi
    case "$w" in
      (-*=*) continue ;;
      (-*)
        case "$cmdpath $w" in
          (${takesValue.join('|') || "''"}) skip=1 ;;
        esac
        continue ;;
    esac
    case "$cmdpath/$w" in
${stepArms(all, zq, (p, body) => `      (${p}) ${body} ;;`).join('\n')}
    esac
  done
  # The value of an option: the values it allows, else a file.
  if [[ \${words[CURRENT]} != -* ]]; then
    case "$cmdpath \${words[CURRENT-1]}" in
${valueArms.join('\n')}
    esac
  fi
  case "$cmdpath" in
${wordArms.join('\n')}
  esac
  if [[ \${words[CURRENT]} == -* ]]; then
    _describe -t options 'option' options
  elif (( \${#commands} )); then
    _describe -t commands 'command' commands
  else
    _files
  fi
}
if [[ \${zsh_eval_context[-1]} == loadautofunc ]]; then
  ${fn} "$@"
else
  compdef ${fn} ${name}
fi
`;
}
