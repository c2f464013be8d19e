import { InputError } from './errors.js';

/** `name` means the latest version, `name@N` a pinned one. */
export interface SourceSpec {
  readonly name: string;
  readonly version: number | null;
}

const NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export function validateImageName(name: string): string {
  if (!NAME.test(name)) {
    throw new InputError(
      `invalid image name '${name}': use 1-63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit`,
      { field: 'name' },
    );
  }
  return name;
}

export function parseSourceSpec(raw: string): SourceSpec {
  const at = raw.indexOf('@');
  if (at < 0) return { name: validateImageName(raw), version: null };
  const name = validateImageName(raw.slice(0, at));
  const v = raw.slice(at + 1);
  if (!/^[1-9][0-9]{0,8}$/.test(v)) {
    throw new InputError(`invalid version in '${raw}': expected name@N with N a positive integer`, { field: 'source' });
  }
  return { name, version: Number(v) };
}

export function formatSourceSpec(spec: SourceSpec): string {
  return spec.version === null ? spec.name : `${spec.name}@${spec.version}`;
}
