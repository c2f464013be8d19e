import { InputError } from '../domain/index.js';
import type { CliErrorCode } from './exit-codes.js';

/** Where `prestage serve` listens by default (its `DEFAULT_LISTEN`, as a URL). */
export const DEFAULT_SERVER_URL = 'http://127.0.0.1:7480';

/** A reply of the API that carries `{error:{code,message,details?}}`, or any other non-2xx reply. */
export class ApiError extends Error {
  constructor(
    message: string,
    /** The server's stable error code (e.g. PRESTAGE_NOT_FOUND). */
    readonly code: string,
    readonly status: number,
    readonly details: Readonly<Record<string, unknown>> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** No HTTP reply at all: nothing listens there, the name does not resolve, the connection broke. */
export class UnreachableError extends Error {
  readonly code = 'PRESTAGE_UNREACHABLE';
  constructor(
    readonly url: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`cannot reach prestage at ${url}: ${reason}`, options);
    this.name = 'UnreachableError';
  }
}

/** `--server`, else `$PRESTAGE_URL`, else the default; `host:port` alone means http. */
export function resolveServerUrl(flag: string | undefined, env: NodeJS.ProcessEnv): URL {
  const raw = (flag ?? env.PRESTAGE_URL ?? '').trim() || DEFAULT_SERVER_URL;
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `http://${raw}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new InputError(`--server: cannot read '${raw}' as a URL (e.g. http://127.0.0.1:7480)`, { field: 'server' });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InputError(`--server: expected an http:// or https:// URL, got '${raw}'`, { field: 'server' });
  }
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  return url;
}

// Fallback when a reply is not in the API's error format (a proxy, a crash page).
const CODE_BY_STATUS: Readonly<Record<number, CliErrorCode>> = {
  400: 'PRESTAGE_INPUT',
  401: 'PRESTAGE_UNAUTHORIZED',
  403: 'PRESTAGE_FORBIDDEN',
  404: 'PRESTAGE_NOT_FOUND',
  409: 'PRESTAGE_CONFLICT',
  422: 'PRESTAGE_BAD_IMAGE',
  502: 'PRESTAGE_UNAVAILABLE',
  503: 'PRESTAGE_UNAVAILABLE',
  504: 'PRESTAGE_UNAVAILABLE',
  507: 'PRESTAGE_NO_SPACE',
};

/** The subset of undici's Agent this client uses. */
interface Dispatcher {
  close(): Promise<void>;
}

const GLOBAL_DISPATCHER = Symbol.for('undici.globalDispatcher.1');

/**
 * Node's fetch gives up on a reply after 5 minutes without headers; a provision may wait
 * 30 minutes for a cold copy and an import may hash gigabytes first. undici is bundled in
 * Node but not importable, so the class of the global dispatcher makes one without timeouts.
 */
async function patientDispatcher(): Promise<Dispatcher | undefined> {
  await fetch('data:,'); // loads undici, which installs the global dispatcher
  const current = (globalThis as Record<symbol, unknown>)[GLOBAL_DISPATCHER];
  const Agent = typeof current === 'object' && current !== null ? current.constructor : undefined;
  if (typeof Agent !== 'function' || Agent.name !== 'Agent') return undefined;
  return new (Agent as new (o: object) => Dispatcher)({ headersTimeout: 0, bodyTimeout: 0 });
}

export interface RequestOptions {
  /** Wait for the reply as long as it takes (imports, provisions). */
  readonly patient?: boolean;
}

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** A request body sent as it is read (an image upload), of a length known up front. */
export interface StreamBody {
  readonly stream: AsyncIterable<Uint8Array>;
  readonly length: number;
  readonly headers?: Readonly<Record<string, string>>;
}

function isStreamBody(body: unknown): body is StreamBody {
  return typeof body === 'object' && body !== null && 'stream' in body && 'length' in body;
}

/** A small client of the HTTP API: JSON in, JSON out, error replies thrown as `ApiError`. */
export class ApiClient {
  private patientValue: Promise<Dispatcher | undefined> | undefined;

  constructor(
    readonly baseUrl: URL,
    /** Sent as `Authorization: Bearer`; the server refuses most routes without one. */
    private readonly token?: string,
  ) {}

  /** The base URL as people write it (no trailing slash). */
  get displayUrl(): string {
    return this.baseUrl.href.replace(/\/$/, '');
  }

  get<T>(path: string, opts?: RequestOptions): Promise<T> {
    return this.request<T>('GET', path, undefined, opts);
  }

  /** Every item of a paged list: follows the `Link: <…>; rel="next"` headers to the end. */
  async list<T>(path: string): Promise<T[]> {
    const all: T[] = [];
    for (let next: string | undefined = path; next !== undefined; ) {
      const { body, headers }: { body: T[]; headers: Headers } = await this.exchange<T[]>('GET', next, undefined);
      all.push(...body);
      next = /<([^>]+)>;\s*rel="next"/.exec(headers.get('link') ?? '')?.[1];
    }
    return all;
  }

  post<T>(path: string, body?: unknown, opts?: RequestOptions): Promise<T> {
    return this.request<T>('POST', path, body, opts);
  }

  put<T>(path: string, body?: unknown, opts?: RequestOptions): Promise<T> {
    return this.request<T>('PUT', path, body, opts);
  }

  /** PUTs a stream as application/octet-stream and waits for the reply as long as it takes. */
  upload<T>(path: string, body: StreamBody): Promise<T> {
    return this.request<T>('PUT', path, body, { patient: true });
  }

  patch<T>(path: string, body?: unknown, opts?: RequestOptions): Promise<T> {
    return this.request<T>('PATCH', path, body, opts);
  }

  delete<T>(path: string, opts?: RequestOptions): Promise<T> {
    return this.request<T>('DELETE', path, undefined, opts);
  }

  /**
   * GETs a stream of Server-Sent Events: resolves to its body once the server answered 200. An
   * error reply throws as `ApiError`, no reply at all as `UnreachableError`; aborting `signal`
   * ends the request and the body.
   */
  async eventStream(path: string, opts: { readonly lastEventId?: string; readonly signal?: AbortSignal } = {}): Promise<AsyncIterable<Uint8Array>> {
    const url = new URL(path.replace(/^\//, ''), this.baseUrl);
    // A stream is quiet between events for as long as it likes: no body timeout (the caller watches the heartbeats).
    const dispatcher = await (this.patientValue ??= patientDispatcher());
    let res: Response;
    try {
      res = await fetch(url, {
        headers: {
          accept: 'text/event-stream',
          ...(this.token !== undefined && { authorization: `Bearer ${this.token}` }),
          ...(opts.lastEventId !== undefined && { 'last-event-id': opts.lastEventId }),
        },
        ...(opts.signal && { signal: opts.signal }),
        ...(dispatcher && { dispatcher }),
      } as RequestInit);
    } catch (e) {
      if (opts.signal?.aborted) throw e;
      throw this.unreachable(e);
    }
    if (!res.ok || res.body === null) {
      const text = await res.text();
      let parsed: unknown;
      try {
        parsed = text.length > 0 ? JSON.parse(text) : undefined;
      } catch {
        parsed = undefined;
      }
      throw res.ok ? new ApiError(`GET ${url.pathname}: the server sent no stream`, 'PRESTAGE_INTERNAL', res.status) : errorFromReply(res.status, res.statusText, parsed);
    }
    return res.body;
  }

  async close(): Promise<void> {
    const d = await this.patientValue;
    this.patientValue = undefined;
    await d?.close();
  }

  private async request<T>(method: Method, path: string, body: unknown, opts: RequestOptions = {}): Promise<T> {
    return (await this.exchange<T>(method, path, body, opts)).body;
  }

  private async exchange<T>(method: Method, path: string, body: unknown, opts: RequestOptions = {}): Promise<{ body: T; headers: Headers }> {
    const url = new URL(path.replace(/^\//, ''), this.baseUrl);
    const dispatcher = opts.patient ? await (this.patientValue ??= patientDispatcher()) : undefined;
    const stream = isStreamBody(body) ? body : undefined;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: {
          accept: 'application/json',
          ...(this.token !== undefined && { authorization: `Bearer ${this.token}` }),
          ...(body !== undefined && { 'content-type': stream ? 'application/octet-stream' : 'application/json' }),
          ...(stream && { 'content-length': String(stream.length), ...stream.headers }),
        },
        ...(body !== undefined && { body: stream ? stream.stream : JSON.stringify(body) }),
        ...(stream && { duplex: 'half' }),
        ...(dispatcher && { dispatcher }),
      } as RequestInit);
    } catch (e) {
      throw this.unreachable(e);
    }
    const text = await res.text();
    let parsed: unknown = undefined;
    if (text.length > 0) {
      try {
        parsed = JSON.parse(text);
      } catch {
        if (res.ok) throw new ApiError(`${method} ${url.pathname}: the server sent a reply that is not JSON`, 'PRESTAGE_INTERNAL', res.status);
      }
    }
    if (res.ok) return { body: parsed as T, headers: res.headers };
    throw errorFromReply(res.status, res.statusText, parsed);
  }

  private unreachable(e: unknown): UnreachableError {
    const cause = e instanceof Error ? (e.cause ?? e) : e;
    const code = typeof cause === 'object' && cause !== null && 'code' in cause ? String(cause.code) : undefined;
    const url = this.displayUrl;
    switch (code ?? '') {
      case 'ECONNREFUSED':
        return new UnreachableError(url, 'is `prestage serve` running?', { cause });
      case 'ENOTFOUND':
      case 'EAI_AGAIN':
        return new UnreachableError(url, `cannot resolve the host name ${this.baseUrl.hostname}`, { cause });
      case 'UND_ERR_HEADERS_TIMEOUT':
      case 'UND_ERR_BODY_TIMEOUT':
        return new UnreachableError(url, 'the server did not answer in time', { cause });
      default:
        if (cause instanceof Error && cause.message === 'bad port') {
          return new UnreachableError(url, `fetch refuses to use port ${this.baseUrl.port} (a blocked port); serve on another one`, { cause });
        }
        return new UnreachableError(url, cause instanceof Error ? cause.message : String(cause), { cause });
    }
  }
}

function errorFromReply(status: number, statusText: string, body: unknown): ApiError {
  const err = typeof body === 'object' && body !== null && 'error' in body ? body.error : undefined;
  if (typeof err === 'object' && err !== null && 'code' in err && 'message' in err && typeof err.code === 'string' && typeof err.message === 'string') {
    const details = 'details' in err && typeof err.details === 'object' && err.details !== null ? (err.details as Record<string, unknown>) : {};
    return new ApiError(err.message, err.code, status, details);
  }
  const code = CODE_BY_STATUS[status] ?? 'PRESTAGE_INTERNAL';
  return new ApiError(`the server replied ${status} ${statusText}`.trim(), code, status);
}

/** A path segment with anything unsafe escaped: ids and refs come from the command line. */
export const seg = (s: string): string => encodeURIComponent(s);
