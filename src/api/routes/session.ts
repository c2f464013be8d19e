import { TokenSchema, ref } from '../schemas.js';
import type { Api } from './api.js';

/** Who the caller is: the dashboard shows actions only to a token whose role may take them. */
export function sessionRoutes(app: Api): void {
  app.get(
    '/v1/whoami',
    { config: { access: 'read' }, schema: { summary: "The token the request came with: its name and role (never its secret)", response: { 200: ref(TokenSchema) } } },
    (req) => req.caller!,
  );
}
