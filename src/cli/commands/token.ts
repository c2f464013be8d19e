import { Command, Option, type CommandUnknownOpts } from '@commander-js/extra-typings';
import { InputError, parseDuration } from '../../domain/index.js';
import { seg } from '../client.js';
import type { CliContext } from '../context.js';
import { dash, json, table, when } from '../format.js';
import type { NewToken, Token } from '../../api/types.js';

export function tokenCommand(ctx: CliContext): CommandUnknownOpts {
  const token = new Command('token').description('API tokens (admin): who may use the API, and as what');

  token
    .command('create')
    .description('make a token and print its secret (shown this once)')
    .argument('<name>', 'a name to list and revoke it by')
    .addOption(new Option('--role <role>', 'admin: everything; operator: pools, hosts, provisions, templates, images; reader: reads but no keys or secrets; host: one host provisions and releases itself; metrics: scrapes /metrics and nothing else').choices(['admin', 'operator', 'reader', 'host', 'metrics'] as const).makeOptionMandatory())
    .option('--host <id>', "with --role host: the host it acts for")
    .option('--expires <duration>', 'lifetime, e.g. 12h or 30d (default: until revoked)')
    .option('--json', 'print the raw JSON reply')
    .action(async (name, opts) => {
      const expiresInS = opts.expires === undefined ? undefined : Math.round(parseDuration(opts.expires, 'expires') / 1000);
      if (expiresInS !== undefined && expiresInS < 60) throw new InputError(`--expires ${opts.expires}: a token lives at least 1 minute`, { field: 'expires' });
      const t = await ctx.client.post<NewToken>('/v1/tokens', {
        name,
        role: opts.role,
        ...(opts.host !== undefined && { hostId: opts.host }),
        ...(expiresInS !== undefined && { expiresInS }),
      });
      if (opts.json) return ctx.out(json(t));
      ctx.out(t.token);
      ctx.err(`token '${t.name}' (${t.role === 'host' ? `host token of ${t.hostId ?? '?'}` : t.role}${t.expiresAt ? `, expires ${when(t.expiresAt)}` : ''}): keep it secret; it is not shown again`);
    });

  token
    .command('list')
    .alias('ls')
    .description('list tokens (never their secrets)')
    .option('--json', 'print the raw JSON reply')
    .action(async (opts) => {
      const tokens = await ctx.client.list<Token>('/v1/tokens');
      if (opts.json) return ctx.out(json(tokens));
      ctx.out(
        table(tokens, [
          { header: 'NAME', value: (t) => t.name },
          { header: 'ROLE', value: (t) => t.role },
          { header: 'HOST', value: (t) => dash(t.hostId) },
          { header: 'CREATED', value: (t) => when(t.createdAt) },
          { header: 'EXPIRES', value: (t) => (t.expiresAt ? when(t.expiresAt) : 'never') },
        ]),
      );
    });

  token
    .command('revoke')
    .alias('rm')
    .description('revoke a token: requests with it are refused at once')
    .argument('<name>', 'token name')
    .option('--json', 'print {"revoked": [NAME]}')
    .action(async (name, opts) => {
      await ctx.client.delete(`/v1/tokens/${seg(name)}`);
      ctx.out(opts.json ? json({ revoked: [name] }) : `revoked token ${name}`);
    });

  return token;
}
