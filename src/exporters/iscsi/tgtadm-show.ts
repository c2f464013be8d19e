/**
 * Parsers of tgtadm's `--op show` output (tgt's usr/target.c, usr/iscsi/*.c): pure, so they are
 * tested on captured text. Sections are known by their headings and fields by their labels;
 * lines they do not know (a newer tgt's additions) are skipped.
 */

export interface TgtSystem {
  /** `ready` or `offline`. */
  readonly state: string;
  /** Low-level drivers and their state (`iscsi: ready`, `iser: error`). */
  readonly llds: Readonly<Record<string, string>>;
  /** Backing store types tgtd was built with (`rdwr`, `aio`, and `rbd` with Debian's tgt-rbd). */
  readonly backingStores: readonly string[];
}

export interface TgtLun {
  readonly lun: number;
  readonly type: string;
  readonly backingStoreType: string;
  /** `None` for LUN 0, the controller tgt adds to every target. */
  readonly backingStorePath: string;
}

export interface TgtNexus {
  /** The session's TSIH: the `--sid` of `--mode conn --op delete`. */
  readonly sid: number;
  readonly initiator: string;
  /** The connection that opened the session and its peer address (tgt keeps only the first). */
  readonly cid: number | null;
  readonly address: string | null;
}

export interface TgtTarget {
  readonly tid: number;
  readonly name: string;
  readonly state: string;
  readonly sessions: readonly TgtNexus[];
  readonly luns: readonly TgtLun[];
  readonly incomingAccounts: readonly string[];
  readonly outgoingAccount: string | null;
  /** Initiator names and addresses allowed in (`ALL` means anyone). */
  readonly acl: readonly string[];
}

export interface TgtConnection {
  readonly sid: number;
  readonly cid: number;
  readonly initiator: string;
  readonly address: string | null;
}

const indentOf = (line: string) => line.length - line.trimStart().length;

export function parseSystem(text: string): TgtSystem {
  let state = '';
  const llds: Record<string, string> = {};
  const backingStores: string[] = [];
  let section = '';
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    if (indentOf(line) === 0) {
      section = line.trim().replace(/:$/, '');
      continue;
    }
    const item = line.trim();
    if (section === 'System') {
      const m = /^State: (\S+)/.exec(item);
      if (m?.[1]) state = m[1];
    } else if (section === 'LLDs') {
      const m = /^(\S+): (\S+)/.exec(item);
      if (m?.[1] && m[2]) llds[m[1]] = m[2];
    } else if (section === 'Backing stores') {
      // `rdwr (bsoflags sync:direct)`: the name is the first word.
      const name = item.split(/\s/)[0];
      if (name) backingStores.push(name);
    }
  }
  return { state, llds, backingStores };
}

export function parsePortals(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    // `Portal: 127.0.0.1:3260,1`: address:port, then the portal group tag.
    const m = /^Portal: (\S+?),\d+\s*$/.exec(line.trim());
    if (m?.[1]) out.push(m[1]);
  }
  return out;
}

export function parseAccounts(text: string): string[] {
  const out: string[] = [];
  let inList = false;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    if (indentOf(line) === 0) inList = line.trim() === 'Account list:';
    else if (inList) out.push(line.trim());
  }
  return out;
}

interface MutableTarget {
  tid: number;
  name: string;
  state: string;
  sessions: { sid: number; initiator: string; cid: number | null; address: string | null }[];
  luns: { lun: number; type: string; backingStoreType: string; backingStorePath: string }[];
  incomingAccounts: string[];
  outgoingAccount: string | null;
  acl: string[];
}

export function parseTargets(text: string): TgtTarget[] {
  const targets: MutableTarget[] = [];
  let t: MutableTarget | undefined;
  let section = '';
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const head = /^Target (\d+): (.+)$/.exec(line);
    if (head?.[1] && head[2] !== undefined) {
      t = { tid: Number(head[1]), name: head[2].trim(), state: '', sessions: [], luns: [], incomingAccounts: [], outgoingAccount: null, acl: [] };
      targets.push(t);
      section = '';
      continue;
    }
    if (!t) continue;
    const item = line.trim();
    if (indentOf(line) <= 4 && item.endsWith(':')) {
      section = item.slice(0, -1);
      continue;
    }
    switch (section) {
      case 'System information': {
        const m = /^State: (\S+)/.exec(item);
        if (m?.[1]) t.state = m[1];
        break;
      }
      case 'I_T nexus information': {
        const nexus = /^I_T nexus: (\d+)$/.exec(item);
        if (nexus?.[1]) {
          t.sessions.push({ sid: Number(nexus[1]), initiator: '', cid: null, address: null });
          break;
        }
        const s = t.sessions.at(-1);
        if (!s) break;
        const init = /^Initiator: (\S+)/.exec(item);
        const conn = /^Connection: (\d+)$/.exec(item);
        const ip = /^IP Address: (\S+)$/.exec(item);
        if (init?.[1]) s.initiator = init[1];
        else if (conn?.[1]) s.cid = Number(conn[1]);
        else if (ip?.[1]) s.address = ip[1];
        break;
      }
      case 'LUN information': {
        const lun = /^LUN: (\d+)$/.exec(item);
        if (lun?.[1]) {
          t.luns.push({ lun: Number(lun[1]), type: '', backingStoreType: '', backingStorePath: '' });
          break;
        }
        const l = t.luns.at(-1);
        if (!l) break;
        const field = /^([^:]+): ?(.*)$/.exec(item);
        if (!field?.[1]) break;
        const value = field[2] ?? '';
        if (field[1] === 'Type') l.type = value;
        else if (field[1] === 'Backing store type') l.backingStoreType = value;
        else if (field[1] === 'Backing store path') l.backingStorePath = value;
        break;
      }
      case 'Account information': {
        const out = /^(.+) \(outgoing\)$/.exec(item);
        if (out?.[1]) t.outgoingAccount = out[1];
        else t.incomingAccounts.push(item);
        break;
      }
      case 'ACL information':
        t.acl.push(item);
        break;
      default:
        break;
    }
  }
  return targets;
}

export function parseConnections(text: string): TgtConnection[] {
  const out: TgtConnection[] = [];
  let sid: number | undefined;
  let current: { sid: number; cid: number; initiator: string; address: string | null } | undefined;
  for (const line of text.split('\n')) {
    const item = line.trim();
    const s = /^Session: (\d+)$/.exec(item);
    const c = /^Connection: (\d+)$/.exec(item);
    const i = /^Initiator: (\S+)/.exec(item);
    const a = /^IP Address: (\S+)$/.exec(item);
    if (s?.[1]) sid = Number(s[1]);
    else if (c?.[1] && sid !== undefined) {
      current = { sid, cid: Number(c[1]), initiator: '', address: null };
      out.push(current);
    } else if (i?.[1] && current) current.initiator = i[1];
    else if (a?.[1] && current) current.address = a[1];
  }
  return out;
}
