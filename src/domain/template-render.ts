/**
 * Rendering templates: `{{name}}` substitution, the customize plan a build carries out, and
 * the per-host NoCloud documents. Pure: the spec was validated before it got here, so an
 * error here means input that changed since (a host's values) or a caller's mistake.
 */
import { InputError } from './errors.js';
import type { CustomizePlan, TemplateSpec } from './template.js';

/** A param name, and so what may stand between `{{` and `}}`. `host.id` fits too. */
export const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

/** The built-in placeholder of per-host documents: the host's id. */
export const HOST_ID_PARAM = 'host.id';

/** A piece of scanned text: literal text, or a placeholder starting at offset `at`. */
export type TextPiece = { readonly literal: string } | { readonly name: string; readonly at: number };

export interface ScannedText {
  readonly pieces: readonly TextPiece[];
  /** Malformed placeholders; `at` is the offset of their `{{`. */
  readonly problems: readonly { readonly at: number; readonly message: string }[];
}

/**
 * Splits text at `{{name}}` placeholders (spaces inside the braces allowed). `{{{{` is a
 * literal `{{`. Anything else that opens with `{{` is a problem rather than literal text:
 * cloud-init's own Jinja (`{{ v1.local_hostname }}`) must be escaped on purpose, never
 * pass through by accident or be eaten as a param.
 */
export function scanPlaceholders(text: string): ScannedText {
  const pieces: TextPiece[] = [];
  const problems: { at: number; message: string }[] = [];
  let i = 0;
  for (let open = text.indexOf('{{'); open >= 0; open = text.indexOf('{{', i)) {
    if (open > i) pieces.push({ literal: text.slice(i, open) });
    if (text.startsWith('{{{{', open)) {
      pieces.push({ literal: '{{' });
      i = open + 4;
      continue;
    }
    const close = text.indexOf('}}', open + 2);
    const inner = close < 0 ? '' : text.slice(open + 2, close);
    if (close < 0 || inner.includes('\n') || inner.includes('{{')) {
      problems.push({ at: open, message: "'{{' without a closing '}}' on its line (write '{{{{' for a literal '{{')" });
      pieces.push({ literal: '{{' });
      i = open + 2;
      continue;
    }
    const name = inner.trim();
    if (PARAM_NAME.test(name)) pieces.push({ name, at: open });
    else problems.push({ at: open, message: `'{{${inner}}}' is not a param name (write '{{{{' for a literal '{{')` });
    i = close + 2;
  }
  if (i < text.length) pieces.push({ literal: text.slice(i) });
  return { pieces, problems };
}

/**
 * Replaces every `{{name}}` with its value. Values go in verbatim (a value holding `{{x}}`
 * is not expanded again). `where` names the text in errors, e.g. `files[0] /etc/motd`.
 */
export function substitute(text: string, values: Readonly<Record<string, string>>, where: string): string {
  const { pieces, problems } = scanPlaceholders(text);
  const missing = [...new Set(pieces.flatMap((p) => ('name' in p && !Object.hasOwn(values, p.name) ? [p.name] : [])))];
  if (problems.length > 0 || missing.length > 0) {
    const why = [...problems.map((p) => p.message), ...missing.map((n) => `'{{${n}}}' has no value`)];
    throw new InputError(`${where}: ${why.join('; ')}`, { where, missing });
  }
  return pieces.map((p) => ('name' in p ? values[p.name]! : p.literal)).join('');
}

/** What a build of `spec` does to a copy of the base disk. With no partition in the spec, partition 1. */
export function planFromSpec(spec: TemplateSpec, epoch: number): CustomizePlan {
  if (!Number.isSafeInteger(epoch) || epoch < 0) throw new InputError(`epoch: expected whole seconds since 1970, got ${epoch}`, { field: 'epoch' });
  const writes = spec.files.map((f, i) => {
    const raw = Buffer.from(f.contentBase64, 'base64');
    const content = f.substitute ? Buffer.from(substitute(raw.toString('utf8'), spec.params, `files[${i}] ${f.path}`), 'utf8') : raw;
    return { path: f.path, mode: f.mode, uid: f.uid, gid: f.gid, content };
  });
  const seed = spec.seed && {
    as: spec.seed.as,
    partition: spec.seed.partition,
    files: seedFiles(spec.seed, spec.params),
  };
  return {
    partition: spec.partition ?? { number: 1 },
    filesystem: spec.filesystem,
    writes,
    removes: [...spec.remove],
    ...(seed && { seed }),
    epoch,
  };
}

/** NoCloud reads a seed only when both `user-data` and `meta-data` exist, so both are always written (empty when not given). */
function seedFiles(seed: NonNullable<TemplateSpec['seed']>, params: Readonly<Record<string, string>>): Record<string, Buffer> {
  const doc = (name: string, text: string | undefined) => Buffer.from(substitute(text ?? '', params, `seed ${name}`), 'utf8');
  return {
    'user-data': doc('user-data', seed.userData),
    'meta-data': doc('meta-data', seed.metaData),
    ...(seed.networkConfig !== undefined && { 'network-config': doc('network-config', seed.networkConfig) }),
  };
}

/** The host a per-host document is rendered for, and the values it gives for the template's per-host params. */
export interface PerHostInput {
  readonly id: string;
  /** Values for per-host params; names the template does not declare are ignored (they may belong to another template). */
  readonly values: Readonly<Record<string, string>>;
}

/** What a host fetches from `/v1/meta/HOST/…`. */
export interface PerHostDocuments {
  readonly metaData: string;
  readonly userData: string;
  /** Only when the template has a per-host network-config; NoCloud then keeps its own default. */
  readonly networkConfig?: string;
}

/**
 * Renders a template's per-host documents for one host. meta-data always names an
 * `instance-id`: cloud-init keys its once-per-instance work on it.
 */
export function renderPerHost(spec: TemplateSpec, host: PerHostInput): PerHostDocuments {
  const values = perHostValues(spec, host);
  const where = (doc: string) => `template '${spec.name}', host '${host.id}', per-host ${doc}`;
  const render = (doc: string, text: string | undefined) => (text === undefined ? undefined : substitute(text, values, where(doc)));
  const metaData = render('meta-data', spec.perHost?.metaData);
  const networkConfig = render('network-config', spec.perHost?.networkConfig);
  return {
    metaData: withInstanceId(metaData, host.id, values['hostname']),
    userData: render('user-data', spec.perHost?.userData) ?? '',
    ...(networkConfig !== undefined && { networkConfig }),
  };
}

/** Template params, then per-host defaults, then the host's own values, then `host.id`: later ones win. */
function perHostValues(spec: TemplateSpec, host: PerHostInput): Record<string, string> {
  const declared = spec.perHost?.params ?? {};
  const values: Record<string, string> = { ...spec.params };
  const missing: string[] = [];
  for (const [name, p] of Object.entries(declared)) {
    const v = Object.hasOwn(host.values, name) ? host.values[name] : p.default;
    if (v === undefined) missing.push(name);
    else values[name] = v;
  }
  if (missing.length > 0) {
    const list = missing.map((n) => `'${n}'`).join(', ');
    throw new InputError(`host '${host.id}' gives no value for per-host param ${list} of template '${spec.name}'`, {
      host: host.id, template: spec.name, missing,
    });
  }
  for (const name of Object.keys(declared)) {
    // A line break in a value could add keys to the YAML documents it lands in.
    if (/[\0\r\n]/.test(values[name]!)) {
      throw new InputError(`host '${host.id}': per-host param '${name}' must be one line`, { host: host.id, template: spec.name, param: name });
    }
  }
  values[HOST_ID_PARAM] = host.id;
  return values;
}

function withInstanceId(metaData: string | undefined, hostId: string, hostname: string | undefined): string {
  // JSON strings are YAML double-quoted scalars: an id like `1.10` stays a string.
  const id = `instance-id: ${JSON.stringify(hostId)}\n`;
  if (metaData === undefined) return hostname === undefined ? id : `${id}local-hostname: ${JSON.stringify(hostname)}\n`;
  return /^instance-id\s*:/m.test(metaData) ? metaData : id + metaData;
}
