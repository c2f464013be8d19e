import { resolve } from 'node:path';
import { Command, type CommandUnknownOpts } from '@commander-js/extra-typings';
import { parseSize } from '../../domain/index.js';
import { buildDemoDisk, DEMO_DEFAULT_SIZE, type DemoDiskResult } from '../../customize/demo-disk.js';
import type { CliContext } from '../context.js';
import { bytes, json, table } from '../format.js';

/** A word as a POSIX shell reads it back unchanged. */
export function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`;
}

/** The kernel command line the demo initramfs expects. */
export const DEMO_APPEND = 'console=ttyS0 root=/dev/vda1 quiet panic=-1';

/**
 * The qemu command that boots a provisioned copy of the demo image over NBD with TLS-PSK, as
 * test/e2e/boot.test.ts does. HOST, ADDR, PORT, COPY and KEYDIR are for the user to fill in
 * (or pass): the host id, the NBD server's address and port, the export (copy) name, and a
 * directory holding the host's key as keys.psk.
 */
export function qemuCommand(kernel: string, initrd: string, nbd: { host?: string; addr?: string; port?: string | number; copy?: string; keyDir?: string } = {}): string {
  const w = shellWord;
  return [
    'qemu-system-x86_64 -accel tcg -m 512 -nographic -no-reboot -nic none',
    `-kernel ${w(kernel)} -initrd ${w(initrd)} -append ${w(DEMO_APPEND)}`,
    `-object tls-creds-psk,id=t0,endpoint=client,dir=${w(nbd.keyDir ?? 'KEYDIR')},username=${w(nbd.host ?? 'HOST')}`,
    `-drive driver=nbd,host=${w(nbd.addr ?? 'ADDR')},port=${String(nbd.port ?? 'PORT')},export=${w(nbd.copy ?? 'COPY')},tls-creds=t0,if=virtio`,
  ].join(' ');
}

export function demoImageCommand(ctx: CliContext): CommandUnknownOpts {
  return new Command('demo-image')
    .description('build a small demo golden image: a sparse raw GPT disk with an ext4 root (partition 1, label rootfs) and an empty cidata partition for a template\'s seed; no root needed')
    .argument('<out>', 'the disk image file to write (with --bootable also OUT.vmlinuz and OUT.initrd)')
    .option('--bootable', 'also write the cloud kernel and an initramfs next to OUT (OUT.vmlinuz, OUT.initrd) and print the qemu command that boots a copy over NBD')
    .option('--size <size>', `the disk's size, rounded up to whole MiB (64 MiB to 1 TiB; default ${DEMO_DEFAULT_SIZE / (1 << 20)}MiB)`)
    .option('--force', 'replace OUT (and OUT.vmlinuz, OUT.initrd) if they exist')
    .option('--verbose', 'print each tool command and its output on stderr')
    .option('--json', 'print what was made as JSON')
    .action(async (out, opts) => {
      const sizeBytes = opts.size === undefined ? undefined : parseSize(opts.size, '--size');
      const r = await buildDemoDisk({
        out: resolve(ctx.io.cwd, out),
        bootable: opts.bootable === true,
        force: opts.force === true,
        ...(sizeBytes !== undefined ? { sizeBytes } : {}),
        ...(ctx.interactive || opts.verbose === true ? { progress: (l: string) => ctx.err(`${l} …`) } : {}),
        ...(opts.verbose === true ? { verbose: (l: string) => ctx.err(l) } : {}),
      });
      const shown = { disk: out, vmlinuz: `${out}.vmlinuz`, initrd: `${out}.initrd` };
      const qemu = r.bootable ? qemuCommand(shown.vmlinuz, shown.initrd) : undefined;
      const next = [`prestage image import debian-12 ${shellWord(out)}`, 'prestage template apply examples/templates/web.yaml'];
      if (opts.json) return ctx.out(json({ ...r, next, ...(qemu !== undefined ? { qemu } : {}) }));
      ctx.out(describe(r, shown, next, qemu));
    });
}

function describe(r: DemoDiskResult, shown: { disk: string; vmlinuz: string; initrd: string }, next: readonly string[], qemu: string | undefined): string {
  const lines = [`made ${shown.disk}: ${bytes(r.sizeBytes)} sparse raw disk (${bytes(r.allocatedBytes)} allocated), GPT`];
  lines.push(
    table(r.partitions, [
      { header: 'PART', value: (p) => String(p.number), align: 'right' },
      { header: 'NAME', value: (p) => p.name },
      { header: 'START', value: (p) => bytes(p.startBytes), align: 'right' },
      { header: 'SIZE', value: (p) => bytes(p.sizeBytes), align: 'right' },
      { header: 'FILESYSTEM', value: (p) => (p.filesystem === 'ext' ? `ext4 '${p.label ?? ''}'` : p.filesystem === 'unknown' ? 'none yet' : p.filesystem) },
      { header: 'FOR', value: (p) => p.purpose },
    ]).trimEnd(),
  );
  if (r.kernel) lines.push(`kernel  ${shown.vmlinuz} (${r.kernel.version}, ${bytes(r.kernel.sizeBytes)}, from ${r.kernel.from})`);
  if (r.initrd) lines.push(`initrd  ${shown.initrd} (${bytes(r.initrd.sizeBytes)}: busybox, ${r.initrd.modules.join(' ')})`);
  lines.push('', 'next, with `prestage serve` running:', ...next.map((l) => `  ${l}`));
  if (qemu !== undefined) {
    lines.push(
      '',
      'boot a provisioned copy (HOST: the host id; ADDR, PORT, COPY: from its nbds://HOST@ADDR:PORT/COPY;',
      'KEYDIR: a directory holding `prestage host key HOST --out KEYDIR/keys.psk`):',
      `  ${qemu}`,
    );
  }
  return lines.join('\n');
}
