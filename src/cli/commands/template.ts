import { resolve } from 'node:path';
import { Command, type CommandUnknownOpts } from '@commander-js/extra-typings';
import { InputError } from '../../domain/index.js';
import { seg } from '../client.js';
import type { CliContext } from '../context.js';
import { dash, json, keyValues, table, when } from '../format.js';
import type { Template, TemplateBuild } from '../../api/types.js';
import { loadTemplateFile } from '../template-file.js';

const ms = (v: number | null) => (v === null ? '-' : v < 10_000 ? `${v} ms` : `${(v / 1000).toFixed(1)} s`);

function buildLine(b: TemplateBuild): string {
  const what = b.state === 'done' ? `built ${b.template}@${b.version}` : b.state === 'unchanged' ? `${b.template}@${b.version} is unchanged (same bytes)` : `${b.state} build of ${b.template}`;
  return `${what} in ${ms(b.buildMs)}${b.error ? `: ${b.error}` : ''}`;
}

function versionArg(raw: string): number {
  if (!/^[1-9][0-9]{0,8}$/.test(raw)) throw new InputError(`expected NAME@N with N a version number (1, 2, …), got '@${raw}'`, { field: 'version' });
  return Number(raw);
}

export function templateCommand(ctx: CliContext): CommandUnknownOpts {
  const template = new Command('template').description('templates: golden images configured once for many hosts, sealed, with their own pools');

  template
    .command('apply')
    .description('create or update a template from a spec file (YAML or JSON) and build it')
    .argument('<file>', 'the spec file; `from:` files are read relative to it')
    .option('--json', 'print the raw JSON reply')
    .action(async (file, opts) => {
      const spec = await loadTemplateFile(resolve(ctx.io.cwd, file), { name: file });
      if (ctx.interactive) ctx.err(`building template ${spec.name} on ${spec.base} …`);
      const r = await ctx.client.post<{ template: Template; build: TemplateBuild }>('/v1/templates', spec, { patient: true });
      ctx.out(opts.json ? json(r) : buildLine(r.build));
    });

  template
    .command('list')
    .alias('ls')
    .description('list templates with their latest version and build')
    .option('--json', 'print the raw JSON reply')
    .action(async (opts) => {
      const ts = await ctx.client.list<Template>('/v1/templates');
      if (opts.json) return ctx.out(json(ts));
      if (ts.length === 0) return ctx.out('no templates (make one: prestage template apply FILE)');
      ctx.out(
        table(ts, [
          { header: 'NAME', value: (t) => t.name },
          { header: 'BASE', value: (t) => t.base },
          { header: 'REBUILD', value: (t) => t.rebuild },
          { header: 'LATEST', value: (t) => dash(t.versions.at(-1)?.ref ?? null) },
          { header: 'LAST BUILD', value: (t) => (t.latestBuild ? `${t.latestBuild.state} ${ms(t.latestBuild.buildMs)}` : '-') },
          { header: 'ROLLOVER', value: (t) => (t.latestBuild?.rolloverMs != null ? `${ms(t.latestBuild.rolloverMs)} / refilled ${ms(t.latestBuild.refilledMs)}` : '-') },
        ]),
      );
    });

  template
    .command('show')
    .description('show a template: its versions, latest build and rollover times')
    .argument('<name>', 'template name')
    .option('--json', 'print the raw JSON reply')
    .action(async (name, opts) => {
      const t = await ctx.client.get<Template>(`/v1/templates/${seg(name)}`);
      if (opts.json) return ctx.out(json(t));
      const b = t.latestBuild;
      ctx.out(
        keyValues([
          ['name', t.name],
          ['base', t.base],
          ['rebuild', t.rebuild],
          ['spec sha256', t.specSha256],
          ['versions', t.versions.length === 0 ? '-' : t.versions.map((v) => `${v.ref} (${v.sha256.slice(0, 12)})`).join(', ')],
          ['last build', b ? `${b.state} (${b.trigger}) ${when(b.startedAt)}, ${ms(b.buildMs)}${b.error ? `: ${b.error}` : ''}` : '-'],
          ['rollover', b?.rolloverMs != null ? `new version served ${ms(b.rolloverMs)} after the base version appeared; pool refilled after ${ms(b.refilledMs)}` : '-'],
          ['updated', when(t.updatedAt)],
        ]),
      );
    });

  template
    .command('build')
    .description('build the template again now (a new version only when the bytes differ)')
    .argument('<name>', 'template name')
    .option('--json', 'print the raw JSON reply')
    .action(async (name, opts) => {
      const b = await ctx.client.post<TemplateBuild>(`/v1/templates/${seg(name)}/build`, undefined, { patient: true });
      ctx.out(opts.json ? json(b) : buildLine(b));
    });

  template
    .command('log')
    .description("print a build's log: the latest build, or with NAME@N the build that made version N")
    .argument('<name[@N]>', 'template name, or NAME@N for the build of version N')
    .option('--all', 'every build, newest first')
    .option('--json', 'print the raw JSON reply')
    .action(async (ref, opts) => {
      const at = ref.lastIndexOf('@');
      const name = at < 0 ? ref : ref.slice(0, at);
      const version = at < 0 ? undefined : versionArg(ref.slice(at + 1));
      const q = version === undefined ? '' : `?version=${version}`;
      const builds = await ctx.client.get<TemplateBuild[]>(`/v1/templates/${seg(name)}/builds${q}`);
      const shown = opts.all ? builds : builds.slice(0, 1);
      if (opts.json) return ctx.out(json(shown));
      if (shown.length === 0) return ctx.out(`no builds of ${name}`);
      ctx.out(shown.map((b) => `# build ${b.id}: ${b.state} (${b.trigger}) ${when(b.startedAt)}\n${b.log ?? ''}`).join('\n\n'));
    });

  template
    .command('rm')
    .alias('remove')
    .description('remove a template, its versions and its spares (hosts mapped to it must be released first)')
    .argument('<name>', 'template name')
    .option('--json', 'print {"removed": [NAME]}')
    .action(async (name, opts) => {
      await ctx.client.delete(`/v1/templates/${seg(name)}`);
      ctx.out(opts.json ? json({ removed: [name] }) : `removed template ${name}`);
    });

  return template;
}
