import { open, type FileHandle } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { Command, Option, type CommandUnknownOpts } from '@commander-js/extra-typings';
import { BadImageError, InputError, errnoCode } from '../../domain/index.js';
import { SHA256_HEADER } from '../../api/headers.js';
import { seg } from '../client.js';
import type { CliContext } from '../context.js';
import { bytes, json, keyValues, table, when } from '../format.js';
import { ByteBar, pollWhile } from '../progress.js';
import type { Image, Task } from '../../api/types.js';

const IMPORT_POLL_MS = 200;
const UPLOAD_CHUNK = 1 << 20;
/** Redraw the upload bar at most every this many bytes. */
const DRAW_EVERY = 16 << 20;

export function imageCommand(ctx: CliContext): CommandUnknownOpts {
  const image = new Command('image').description('golden images: import, list, show, remove');

  image
    .command('import')
    .description('import an image (raw or qcow2) as the next version of NAME: uploads a local file, or has the server fetch a URL')
    .argument('<name>', 'image name (a-z, 0-9, . _ -)')
    .argument('<source>', 'a local file (uploaded), an http(s):// URL (the server fetches it), or with --server-path a file on the server')
    .option('--sha256 <hex>', 'the sha256 the file or URL must have (of the bytes sent); refused and nothing kept otherwise')
    .option('--server-path', 'SOURCE is an absolute path on the server, inside one of its --import-dir directories (admin token)')
    .addOption(new Option('--driver <kind>', 'where the image and its copies go: file (the data directory) or rbd (Ceph); default: where the latest version of NAME is, else the server\'s --driver').choices(['file', 'rbd'] as const))
    .option('--json', 'print the raw JSON reply')
    .action(async (name, source, opts) => {
      const where: { driver?: string } = opts.driver === undefined ? {} : { driver: opts.driver };
      const img = /^https?:\/\//i.test(source) && !opts.serverPath
        ? await importOnServer(ctx, name, { url: source, ...(opts.sha256 !== undefined && { sha256: opts.sha256 }), ...where }, 'download', `downloading ${name}`)
        : opts.serverPath
          ? await importServerPath(ctx, name, source, opts.sha256, where)
          : await upload(ctx, name, resolve(ctx.io.cwd, source), opts.sha256, where);
      ctx.out(opts.json ? json(img) : `imported ${img.ref} (${bytes(img.sizeBytes)}, sha256 ${img.sha256.slice(0, 12)}, on ${img.driver ?? '?'})`);
    });

  image
    .command('list')
    .alias('ls')
    .description('list every image version')
    .option('--json', 'print the raw JSON reply')
    .action(async (opts) => {
      const images = await ctx.client.list<Image>('/v1/images');
      if (opts.json) return ctx.out(json(images));
      if (images.length === 0) return ctx.out('no images (import one: prestage image import NAME FILE)');
      ctx.out(
        table(images, [
          { header: 'REF', value: (i) => i.ref },
          { header: 'SIZE', value: (i) => bytes(i.sizeBytes), align: 'right' },
          { header: 'SHA256', value: (i) => i.sha256.slice(0, 12) },
          { header: 'DRIVER', value: (i) => i.driver ?? '-' },
          { header: 'STATE', value: (i) => i.state },
          { header: 'CREATED', value: (i) => when(i.createdAt) },
        ]),
      );
    });

  image
    .command('show')
    .description('show one image version')
    .argument('<ref>', 'NAME (the latest version) or NAME@N')
    .option('--json', 'print the raw JSON reply')
    .action(async (ref, opts) => {
      const i = await ctx.client.get<Image>(`/v1/images/${seg(ref)}`);
      if (opts.json) return ctx.out(json(i));
      ctx.out(
        keyValues([
          ['ref', i.ref],
          ['id', i.id],
          ['size', `${bytes(i.sizeBytes)} (${i.sizeBytes} bytes)`],
          ['sha256', i.sha256],
          ['state', i.state],
          ['volume', i.volume],
          ['driver', i.driver ?? '(none configured here stores it)'],
          ['created', when(i.createdAt)],
        ]),
      );
    });

  image
    .command('rm')
    .alias('remove')
    .description('remove an image: NAME removes every version, NAME@N one')
    .argument('<ref>', 'NAME or NAME@N')
    .option('--json', 'print the raw JSON reply')
    .action(async (ref, opts) => {
      const r = await ctx.client.delete<{ removed: string[] }>(`/v1/images/${seg(ref)}`);
      ctx.out(opts.json ? json(r) : `removed ${r.removed.join(', ')}`);
    });

  return image;
}

/** Streams a local file to PUT /v1/images/NAME, drawing the bytes sent. */
async function upload(ctx: CliContext, name: string, file: string, sha256: string | undefined, where: { driver?: string }): Promise<Image> {
  let handle: FileHandle;
  let size: number;
  try {
    handle = await open(file, 'r');
    const st = await handle.stat();
    if (!st.isFile()) {
      await handle.close();
      throw new BadImageError(`${file} is not a regular file`, { path: file });
    }
    size = st.size;
  } catch (e) {
    if (e instanceof BadImageError) throw e;
    throw new BadImageError(`cannot read ${file}: ${errnoCode(e) ?? String(e)}`, { path: file }, { cause: e });
  }
  const bar = new ByteBar(ctx);
  let sent = 0;
  let drawn = 0;
  async function* chunks(): AsyncGenerator<Uint8Array> {
    for await (const chunk of handle.createReadStream({ highWaterMark: UPLOAD_CHUNK }) as AsyncIterable<Buffer>) {
      sent += chunk.length;
      if (ctx.interactive && (sent - drawn >= DRAW_EVERY || sent === size)) {
        drawn = sent;
        bar.update(sent, size, `uploading ${name}`);
      }
      yield chunk;
    }
  }
  try {
    return await ctx.client.upload<Image>(`/v1/images/${seg(name)}${where.driver === undefined ? '' : `?driver=${where.driver}`}`, {
      stream: chunks(),
      length: size,
      headers: sha256 === undefined ? {} : { [SHA256_HEADER]: sha256 },
    });
  } finally {
    bar.stop();
    await handle.close().catch(() => undefined);
  }
}

/** Has the server import a file on its own disk (the path must be absolute: the server's working directory is its own). */
function importServerPath(ctx: CliContext, name: string, path: string, sha256: string | undefined, where: { driver?: string }): Promise<Image> {
  if (!isAbsolute(path)) throw new InputError(`--server-path takes an absolute path on the server, not '${path}'`, { path });
  if (sha256 !== undefined) throw new InputError('--sha256 goes with an upload or a URL; a server path is hashed as it is read', {});
  return importOnServer(ctx, name, { path, ...where }, 'import', `importing ${name}`);
}

/** POST /v1/images, drawing the server's progress from /v1/tasks while it works. */
async function importOnServer(ctx: CliContext, name: string, body: Record<string, string | undefined>, kind: Task['kind'], label: string): Promise<Image> {
  const pending = ctx.client.post<Image>('/v1/images', { name, ...body }, { patient: true });
  const bar = new ByteBar(ctx);
  const polling = ctx.interactive
    ? pollWhile(
        pending,
        async () => {
          const task = (await ctx.client.get<Task[]>('/v1/tasks')).find((t) => t.kind === kind && t.subject === name);
          if (task && task.totalBytes > 0) bar.update(task.doneBytes, task.totalBytes, label);
        },
        IMPORT_POLL_MS,
      )
    : Promise.resolve();
  try {
    return await pending;
  } finally {
    await polling;
    bar.stop();
  }
}
