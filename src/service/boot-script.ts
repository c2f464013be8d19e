/**
 * Network boot's pure parts: the iPXE scripts `GET /v1/boot/ipxe` answers with, and the
 * `--boot-networks` list that decides who may ask. No I/O.
 *
 * iPXE has no quoting: a script line is split at whitespace, `${…}` is expanded from its
 * settings, and `||`, `&&` and `;` join commands. A value put in a script can therefore not be
 * escaped, only kept to characters that mean nothing to that parser. Values that must be exact
 * (names, secrets, URLs) are refused when they hold anything else; text for people to read (the
 * messages `echo` prints) has every other character replaced.
 */
import { BlockList, isIP } from 'node:net';
import { InputError } from '../domain/index.js';

/** What `sanboot` needs to reach a host's copy over iSCSI, with the host's own credentials. */
export interface IscsiBootTarget {
  /** The host the script is for (named in its comments and messages). */
  readonly hostId: string;
  /** `address:port` (`[v6]:port`) as the iSCSI access gives it. */
  readonly portal: string;
  /** The target's name (IQN). */
  readonly target: string;
  readonly lun: number;
  /** The initiator name the host must present: its target lets no other in. */
  readonly initiator: string;
  readonly chap: { readonly user: string; readonly secret: string };
  /** Mutual CHAP: the account the target proves itself with. */
  readonly mutual?: { readonly user: string; readonly secret: string };
}

/** A value iPXE reads literally: no whitespace, no `$` (expansion), no `|`, `&`, `;` (command joiners), no `#`. */
const IPXE_WORD = /^[A-Za-z0-9._~:@/?=%+,[\]-]+$/;

/** Seconds an unknown or unprovisioned host waits before asking again. */
export const BOOT_RETRY_SECONDS = 30;

function word(value: string, what: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 1024 || !IPXE_WORD.test(value)) {
    throw new InputError(`${what} cannot go into an iPXE script: it holds characters iPXE would read as syntax (whitespace, '$', '|', '&', ';', '#')`, { field: what });
  }
  return value;
}

/** Text for `echo`: anything iPXE could read as syntax, and anything not printable ASCII, becomes '?'. */
export function ipxeText(text: string): string {
  return text.replace(/[^A-Za-z0-9 .,:/_@=+()'!?-]/g, '?').slice(0, 200);
}

/**
 * The root path of iPXE's `sanboot`: `iscsi:<server>:<protocol>:<port>:<lun>:<target>`, the
 * protocol left empty (TCP). The port and LUN are always written: the copy is LUN 1, not iPXE's default 0.
 */
export function iscsiRootPath(portal: string, lun: number, target: string): string {
  const at = portal.lastIndexOf(':');
  const host = portal.slice(0, at);
  const port = Number(portal.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port) || port < 1 || port > 65535) throw new InputError(`iSCSI portal '${ipxeText(portal)}': expected ADDRESS:PORT`, { field: 'portal' });
  if (!Number.isInteger(lun) || lun < 0 || lun > 16383) throw new InputError(`LUN ${lun}: expected a whole number from 0 to 16383`, { field: 'lun' });
  // A bare IPv6 address would be split at its colons: iPXE reads it in brackets.
  const server = isIP(host) === 6 ? `[${host}]` : host;
  return `iscsi:${word(server, 'iSCSI portal')}::${port}:${lun}:${word(target, 'target name')}`;
}

/**
 * The script that boots a host from its copy: its initiator name and CHAP credentials set, then
 * `sanboot`. When the boot fails (the target unreachable, credentials changed) it says why and
 * asks again after a delay rather than dropping to the firmware's next boot device.
 */
export function ipxeSanbootScript(t: IscsiBootTarget, retryUrl: string): string {
  const lines = [
    '#!ipxe',
    `# prestage: host ${ipxeText(t.hostId)} boots its copy over iSCSI (target ${word(t.target, 'target name')}, LUN ${t.lun}).`,
    // The credentials in this script are this host's only: they open no other host's target.
    `set initiator-iqn ${word(t.initiator, 'initiator name')}`,
    `set username ${word(t.chap.user, 'CHAP user')}`,
    `set password ${word(t.chap.secret, 'CHAP secret')}`,
  ];
  if (t.mutual) lines.push(`set reverse-username ${word(t.mutual.user, 'mutual CHAP user')}`, `set reverse-password ${word(t.mutual.secret, 'mutual CHAP secret')}`);
  lines.push(
    `sanboot ${iscsiRootPath(t.portal, t.lun, t.target)} || goto failed`,
    ':failed',
    `echo prestage: host ${ipxeText(t.hostId)} could not boot from ${ipxeText(t.portal)} (target ${ipxeText(t.target)}); trying again in ${BOOT_RETRY_SECONDS} s`,
    ...retry(retryUrl),
  );
  return `${lines.join('\n')}\n`;
}

/**
 * The script for a host that cannot boot yet (no host has the MAC, or it has no copy and no
 * default source): prints why, waits, and asks again — a 404 would end iPXE's boot attempt.
 */
export function ipxeRetryScript(message: string, retryUrl: string): string {
  return `${['#!ipxe', `echo prestage: ${ipxeText(message)}`, `echo prestage: asking again in ${BOOT_RETRY_SECONDS} s`, ...retry(retryUrl)].join('\n')}\n`;
}

function retry(url: string): string[] {
  return [`sleep ${BOOT_RETRY_SECONDS}`, `chain --replace --autofree ${word(url, 'boot URL')}`];
}

/** The networks the boot endpoint answers (`--boot-networks CIDR,…`); empty: none. */
export class BootNetworks {
  private readonly list = new BlockList();

  private constructor(readonly cidrs: readonly string[]) {
    for (const cidr of cidrs) {
      const [address = '', prefix = ''] = cidr.split('/');
      const type = isIP(address) === 6 ? 'ipv6' : 'ipv4';
      this.list.addSubnet(address, Number(prefix), type);
    }
  }

  /** Parses `10.0.0.0/24,fd00::/64`; each entry must be an address with its prefix length. */
  static parse(raw: string | readonly string[] | undefined): BootNetworks {
    const items = (typeof raw === 'string' ? raw.split(',') : (raw ?? [])).map((s) => s.trim()).filter((s) => s !== '');
    const cidrs = items.map((item) => {
      const m = /^([^/]+)\/(\d{1,3})$/.exec(item);
      const family = m ? isIP(m[1] ?? '') : 0;
      const prefix = m ? Number(m[2]) : NaN;
      if (!m || family === 0 || prefix > (family === 4 ? 32 : 128)) {
        throw new InputError(`--boot-networks: '${ipxeText(item)}' is not a network: expected ADDRESS/PREFIX such as 10.0.0.0/24 or fd00::/64`, { field: 'bootNetworks' });
      }
      return `${m[1]}/${prefix}`;
    });
    return new BootNetworks(Object.freeze(cidrs));
  }

  get empty(): boolean {
    return this.cidrs.length === 0;
  }

  /** Whether a request from this address may have a boot script. An address that is not one is refused. */
  allows(address: string | undefined): boolean {
    if (address === undefined || this.empty) return false;
    // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; the list holds them as IPv4.
    const plain = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1] ?? address;
    const family = isIP(plain);
    if (family === 0) return false;
    return this.list.check(plain, family === 6 ? 'ipv6' : 'ipv4');
  }
}
