import { Command, type CommandUnknownOpts } from '@commander-js/extra-typings';
import { InputError } from '../../domain/index.js';
import { seg } from '../client.js';
import type { CliContext } from '../context.js';
import { json, keyValues, ms } from '../format.js';
import { ByteBar, pollWhile } from '../progress.js';
import type { Access, Copy, Image, Provision, ReleaseReply } from '../../api/types.js';

/** A warm provision answers in milliseconds; a bar only for one that waits for a copy. */
const BAR_AFTER_MS = 300;
const POLL_MS = 200;

/** How the host reaches its copy, as one `key value` pair. */
export function accessLine(a: Access): readonly [string, string] {
  switch (a.kind) {
    case 'path':
      return ['path', a.path];
    case 'nbd':
      return ['nbd', `${a.uri} (export ${a.exportName})`];
    case 'iscsi':
      return ['iscsi', iscsiLine(a)];
  }
}

/** portal, target, LUN, initiator and CHAP user(s) of an iSCSI access, on one line. */
export function iscsiLine(a: Extract<Access, { kind: 'iscsi' }>): string {
  const mutual = a.mutualChapUser === undefined ? '' : `, mutual CHAP user ${a.mutualChapUser}`;
  return `${a.portal} target ${a.target} LUN ${a.lun} (initiator ${a.initiator}, CHAP user ${a.chapUser}${mutual})`;
}

/** The access as one URI (iSCSI: libiscsi's iscsi://PORTAL/TARGET/LUN, credentials left out). */
export function accessUri(a: Access): string {
  switch (a.kind) {
    case 'path':
      return a.path;
    case 'nbd':
      return a.uri;
    case 'iscsi':
      return `iscsi://${a.portal}/${a.target}/${a.lun}`;
  }
}

/** `-object … -drive …` for qemu: the host's copy over NBD, TLS-PSK with the key in `keyDir`. */
function qemuDriveOptions(p: Provision, keyDir: string): string {
  if (p.access.kind === 'iscsi') throw new InputError(`--qemu: host ${p.hostId} reaches its copy over iSCSI; \`prestage host access ${p.hostId}\` shows the target and credentials`, { field: 'qemu' });
  if (p.access.kind !== 'nbd') return `-drive file=${p.access.path},format=raw,if=virtio`;
  const u = new URL(p.access.uri);
  if (/[\s,]/.test(keyDir)) throw new InputError(`--qemu ${keyDir}: a key directory without spaces or commas, please (qemu's option syntax)`, { field: 'qemu' });
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  return [
    `-object tls-creds-psk,id=t0,endpoint=client,dir=${keyDir},username=${p.hostId}`,
    `-drive driver=nbd,host=${host},port=${u.port || '10809'},export=${p.access.exportName},tls-creds=t0,if=virtio`,
  ].join(' ');
}

/** Draws the copy the waiting provision is most likely to get: the furthest along of its image. */
function copyProgress(ctx: CliContext, source: string): { tick: () => Promise<void>; bar: ByteBar } {
  // A copy's byte count includes its verification pass, so only the share done is shown.
  const bar = new ByteBar(ctx, false);
  let imageId: string | undefined;
  const tick = async () => {
    imageId ??= (await ctx.client.get<Image>(`/v1/images/${seg(source)}`)).id;
    const copies = (await ctx.client.list<Copy>('/v1/copies?state=making')).filter((c) => c.imageId === imageId && c.progress);
    const best = copies.reduce<Copy | undefined>((a, c) => (!a || fraction(c) > fraction(a) ? c : a), undefined);
    if (best?.progress && best.progress.totalBytes > 0) {
      bar.update(best.progress.doneBytes, best.progress.totalBytes, `waiting for a copy of ${source}${copies.length > 1 ? ` (${copies.length} in flight)` : ''}`);
    }
  };
  return { tick, bar };
}

const fraction = (c: Copy) => (c.progress && c.progress.totalBytes > 0 ? c.progress.doneBytes / c.progress.totalBytes : 0);

export function provisionCommand(ctx: CliContext): CommandUnknownOpts {
  return new Command('provision')
    .description('map a copy of SOURCE to HOST: a ready spare at once, else the next copy made')
    .argument('<host>', 'host id')
    .argument('<source>', 'NAME (the latest version) or NAME@N')
    .option('--uri', "print only how the host reaches its copy (the nbds:// URI, or the local path), for scripts: nbdinfo \"$(prestage provision H S --uri)?tls-psk-file=H.psk\"")
    .option('--qemu <keydir>', "print only qemu's options for the host's disk over NBD with TLS-PSK, its key file in KEYDIR/keys.psk (prestage host key HOST --out KEYDIR/keys.psk)")
    .option('--json', 'print the raw JSON reply')
    .action(async (hostId, source, opts) => {
      const pending = ctx.client.post<Provision>(`/v1/hosts/${seg(hostId)}/provision`, { source }, { patient: true });
      const { tick, bar } = copyProgress(ctx, source);
      const polling = ctx.interactive ? pollWhile(pending, tick, POLL_MS, BAR_AFTER_MS) : Promise.resolve();
      let p: Provision;
      try {
        p = await pending;
      } finally {
        await polling;
        bar.stop();
      }
      if (opts.json) return ctx.out(json(p));
      if (opts.uri) return ctx.out(accessUri(p.access));
      if (opts.qemu !== undefined) return ctx.out(qemuDriveOptions(p, opts.qemu));
      ctx.out(
        keyValues([
          ['host', p.hostId],
          ['image', p.image],
          ['copy', p.copyId],
          ['outcome', p.existing ? `${p.outcome} (already mapped)` : p.outcome],
          ['wait', ms(p.waitMs)],
          accessLine(p.access),
        ]),
      );
    });
}

export function releaseCommand(ctx: CliContext): CommandUnknownOpts {
  return new Command('release')
    .description("unmap HOST's copy and remove it")
    .argument('<host>', 'host id')
    .option('--json', 'print the raw JSON reply')
    .action(async (hostId, opts) => {
      const r = await ctx.client.post<ReleaseReply>(`/v1/hosts/${seg(hostId)}/release`);
      ctx.out(opts.json ? json(r) : `released ${r.hostId} (copy ${r.copyId})`);
    });
}
