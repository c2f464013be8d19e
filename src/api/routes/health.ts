import { shortageText } from '../../pool/index.js';
import { HealthSchema, ref } from '../schemas.js';
import type { Api, RouteContext } from './api.js';

/** What needs an operator: pools short of space. */
export function problems({ deps }: RouteContext) {
  return deps.replenisher.shortages().map((s) => ({ ...s, message: `${s.source}: ${shortageText(s)}` }));
}

export function healthRoutes(app: Api, ctx: RouteContext): void {
  app.get('/openapi.json', { schema: { hide: true }, config: { access: 'public' } }, () => app.swagger());

  // Always 200 while the process serves (a liveness probe reads the status code); `ok` is false
  // and `status` 'degraded' while something needs attention, listed in `problems`.
  app.get(
    '/healthz',
    {
      config: { access: 'public' },
      schema: { response: { 200: ref(HealthSchema) } },
    },
    () => {
      const list = problems(ctx);
      return { ok: list.length === 0, status: list.length === 0 ? ('ok' as const) : ('degraded' as const), replenisher: ctx.deps.replenisher.state, problems: list };
    },
  );
}
