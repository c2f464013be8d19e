/**
 * The dashboard's client of the API: JSON over fetch with the bearer token, and errors carrying
 * the API's own message. The token lives in sessionStorage (gone when the tab closes), never in
 * a URL, so it is not in the history, the server's logs or a Referer.
 */
import type { ApiErrorBody, ApiPath, Image, Reply, RequestBody } from '../../src/api/types.js';

const TOKEN_KEY = 'prestage.token';

export function savedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(token: string | null): void {
  if (token === null) sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, token);
}

/** A refusal or failure, with the API's code and message (what the page shows). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Something went wrong: the API's message when it gave one. */
export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function errorFrom(status: number, statusText: string, text: string): ApiError {
  let body: Partial<ApiErrorBody> | undefined;
  try {
    body = JSON.parse(text) as Partial<ApiErrorBody>;
  } catch {
    body = undefined;
  }
  const e = body?.error;
  return new ApiError(status, e?.code ?? `HTTP_${status}`, e?.message ?? (text.trim() || `${status} ${statusText}`));
}

/** Where a signed-out page goes: the session's token was refused (revoked, expired). */
let onUnauthorized: () => void = () => undefined;
export function whenUnauthorized(f: () => void): void {
  onUnauthorized = f;
}

export function authHeaders(token = savedToken()): Record<string, string> {
  return token === null ? {} : { authorization: `Bearer ${token}` };
}

async function call(method: string, path: string, body?: unknown, token?: string): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers: { ...authHeaders(token), ...(body !== undefined && { 'content-type': 'application/json' }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
  } catch (e) {
    throw new ApiError(0, 'NETWORK', `the server did not answer (${messageOf(e)})`);
  }
  const text = await res.text();
  if (!res.ok) {
    const err = errorFrom(res.status, res.statusText, text);
    if (res.status === 401 && token === undefined) onUnauthorized();
    throw err;
  }
  return text === '' ? undefined : JSON.parse(text);
}

/** A path of the route P with its parameters filled in, and perhaps a query: checked against the route by the compiler. */
type Params<P extends string> = P extends `${infer A}{${string}}${infer B}` ? `${A}${string}${Params<B>}` : P;
type Filled<P extends string> = Params<P> | `${Params<P>}?${string}`;

export const api = {
  get<P extends ApiPath>(_route: P, path: Filled<P>): Promise<Reply<P, 'get'>> {
    return call('GET', path) as Promise<Reply<P, 'get'>>;
  },
  post<P extends ApiPath>(_route: P, path: Filled<P>, body?: RequestBody<P, 'post'>): Promise<Reply<P, 'post'>> {
    return call('POST', path, body ?? {}) as Promise<Reply<P, 'post'>>;
  },
  put<P extends ApiPath>(_route: P, path: Filled<P>, body: RequestBody<P, 'put'>): Promise<Reply<P, 'put'>> {
    return call('PUT', path, body) as Promise<Reply<P, 'put'>>;
  },
  /** Checks a token before it is kept: who it is, or the API's refusal. */
  whoami(token: string): Promise<Reply<'/v1/whoami', 'get'>> {
    return call('GET', '/v1/whoami', undefined, token) as Promise<Reply<'/v1/whoami', 'get'>>;
  },
};

/** Path segments of names the API takes (`web@2` stays readable; anything odd is escaped). */
export const seg = (s: string): string => encodeURIComponent(s).replace(/%40/g, '@');

/**
 * Uploads an image file as the next version of `name`, reporting bytes sent. XMLHttpRequest, not
 * fetch: only it reports an upload's progress.
 */
export function uploadImage(name: string, file: Blob, onProgress: (sent: number, total: number) => void): Promise<Image> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', `/v1/images/${seg(name)}`);
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.setRequestHeader('content-type', 'application/octet-stream');
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(JSON.parse(xhr.responseText) as Image);
      else reject(errorFrom(xhr.status, xhr.statusText, xhr.responseText));
    };
    xhr.onerror = () => reject(new ApiError(0, 'NETWORK', 'the upload was cut off before the server answered'));
    xhr.send(file);
  });
}
