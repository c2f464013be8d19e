/**
 * The API's replies and request bodies as TypeScript types, for its clients: the CLI and the
 * dashboard import these (type-only: nothing of the server is loaded). They are generated from
 * the OpenAPI document the server serves (src/api/generated/openapi.ts, `npm run
 * gen:api-types`), so a client cannot drift from the server: a changed schema changes them, and
 * the compiler finds every client that reads a field no longer there.
 *
 * Named schemas are aliased by name (`Pool`, `Host`, …); any route's reply is `Reply<PATH,
 * METHOD>`, and its JSON body `RequestBody<PATH, METHOD>`.
 */
import type { components, paths } from './generated/openapi.js';

type Schemas = components['schemas'];

export type ApiErrorBody = Schemas['Error'];
export type Copy = Schemas['Copy'];
export type Event = Schemas['Event'];
export type Health = Schemas['Health'];
export type Host = Schemas['Host'];
export type HostAccess = Schemas['HostAccess'];
export type HostKey = Schemas['HostKey'];
export type Image = Schemas['Image'];
export type Instance = Schemas['Instance'];
export type IscsiCredential = Schemas['IscsiCredential'];
export type MetaCredential = Schemas['MetaCredential'];
export type NewToken = Schemas['NewToken'];
export type Pool = Schemas['Pool'];
export type Problem = Schemas['Problem'];
export type Provision = Schemas['Provision'];
export type Status = Schemas['Status'];
export type Task = Schemas['Task'];
export type Template = Schemas['Template'];
export type TemplateBuild = Schemas['TemplateBuild'];
export type Token = Schemas['Token'];

/** Parts of the named ones, by the names people use for them. */
export type Access = Provision['access'];
export type Mapping = NonNullable<Host['mapping']>;
export type PoolPolicy = Pool['policy'];
export type PoolPlan = NonNullable<Pool['plan']>;
export type Shortage = NonNullable<Pool['shortage']>;
export type CopyInFlight = Status['copiesInFlight'][number];
export type InstanceSummary = Status['instances'][number];
export type Role = Token['role'];

export type ApiPath = keyof paths;
export type Method = 'get' | 'put' | 'post' | 'patch' | 'delete';

type Operation<P extends ApiPath, M extends Method> = NonNullable<paths[P][M]>;
type Responses<P extends ApiPath, M extends Method> = Operation<P, M> extends { readonly responses: infer R } ? R : never;
/** The reply a route answers when it succeeds (each answers one of these). */
type Success<R> = R extends { readonly 200: infer A } ? A : R extends { readonly 201: infer A } ? A : R extends { readonly 204: infer A } ? A : never;
type Body<A> = A extends { content: { readonly 'application/json': infer B } }
  ? B
  : A extends { content: { readonly 'text/plain': infer T } }
    ? T
    : undefined;

/** The body of a route's success reply: `Reply<'/v1/pools', 'get'>` is a list of `Pool`; undefined for a 204. */
export type Reply<P extends ApiPath, M extends Method> = Body<Success<Responses<P, M>>>;

/** The JSON body a route takes. */
export type RequestBody<P extends ApiPath, M extends Method> = Operation<P, M> extends { readonly requestBody?: infer B }
  ? NonNullable<B> extends { content: { readonly 'application/json': infer J } }
    ? J
    : never
  : never;

/** The query string a route reads. */
export type Query<P extends ApiPath, M extends Method> = Operation<P, M> extends { readonly parameters: { readonly query?: infer Q } } ? NonNullable<Q> : never;

/** Replies of routes without a named schema of their own. */
export type ReleaseReply = Reply<'/v1/hosts/{id}/release', 'post'>;
export type ImageRemovalReply = Reply<'/v1/images/{ref}', 'delete'>;
export type TemplateAppliedReply = Reply<'/v1/templates', 'post'>;
