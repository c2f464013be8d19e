import { resolve } from 'node:path';
import { Command, type CommandUnknownOpts } from '@commander-js/extra-typings';
import { seg } from '../client.js';
import type { CliContext } from '../context.js';
import { bytes, json, keyValues, table, when } from '../format.js';
import { ByteBar, pollWhile } from '../progress.js';
import type { ImageReply, TaskReply } from '../replies.js';

const IMPORT_POLL_MS = 200;

export function imageCommand(ctx: CliContext): CommandUnknownOpts {
  const image = new Command('image').description('golden images: import, list, show, remove');

  image
    .command('import')
    .description('import an image file (raw or qcow2) as the next version of NAME')
    .argument('<name>', 'image name (a-z, 0-9, . _ -)')
    .argument('<file>', 'the image file, as the server sees it (relative paths are made absolute here)')
    .option('--json', 'print the raw JSON reply')
    .action(async (name, file, opts) => {
      const path = resolve(ctx.io.cwd, file);
      const pending = ctx.client.post<ImageReply>('/v1/images', { name, path }, { patient: true });
      const bar = new ByteBar(ctx);
      const polling = ctx.interactive
        ? pollWhile(
            pending,
            async () => {
              const task = (await ctx.client.get<TaskReply[]>('/v1/tasks')).find((t) => t.kind === 'import' && t.subject === name);
              if (task && task.totalBytes > 0) bar.update(task.doneBytes, task.totalBytes, `importing ${name}`);
            },
            IMPORT_POLL_MS,
          )
        : Promise.resolve();
      let img: ImageReply;
      try {
        img = await pending;
      } finally {
        await polling;
        bar.stop();
      }
      ctx.out(opts.json ? json(img) : `imported ${img.ref} (${bytes(img.sizeBytes)}, sha256 ${img.sha256.slice(0, 12)})`);
    });

  image
    .command('list')
    .alias('ls')
    .description('list every image version')
    .option('--json', 'print the raw JSON reply')
    .action(async (opts) => {
      const images = await ctx.client.get<ImageReply[]>('/v1/images');
      if (opts.json) return ctx.out(json(images));
      if (images.length === 0) return ctx.out('no images (import one: prestage image import NAME FILE)');
      ctx.out(
        table(images, [
          { header: 'REF', value: (i) => i.ref },
          { header: 'SIZE', value: (i) => bytes(i.sizeBytes), align: 'right' },
          { header: 'SHA256', value: (i) => i.sha256.slice(0, 12) },
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
      const i = await ctx.client.get<ImageReply>(`/v1/images/${seg(ref)}`);
      if (opts.json) return ctx.out(json(i));
      ctx.out(
        keyValues([
          ['ref', i.ref],
          ['id', i.id],
          ['size', `${bytes(i.sizeBytes)} (${i.sizeBytes} bytes)`],
          ['sha256', i.sha256],
          ['state', i.state],
          ['volume', i.volume],
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
