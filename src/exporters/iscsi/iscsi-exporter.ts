/**
 * Maps a copy to its host over iSCSI, through a tgtd this process runs (`Tgtd`): one target per
 * mapped host, named `<prefix>:<host>`, whose LUN 1 is the copy's file. Only the host's initiator
 * name is on the target's ACL, and it must log in with the host's CHAP account (and, with mutual
 * CHAP, the target proves itself with its own). Releasing a host takes the ACL entry away first,
 * then closes its connections and deletes the target, so the initiator's automatic reconnect
 * finds nothing. After tgtd restarts, every target is put back.
 *
 * The exporter is the one writer of its tgtd's configuration: the targets and accounts tgtd holds
 * should always equal what this object holds, and `resync` brings them back to that.
 */
import { stat } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import type { Logger } from 'pino';
import { ConflictError, PrestageError, type Access, type Copy, type ExportedCopy, type ExporterAccess, type HostCredentials, type Mapping } from '../../domain/index.js';
import { checkHostAuth, checkTargetPrefix, DEFAULT_TARGET_PREFIX, isIscsiName, targetNameFor, type IscsiHostAuth } from './names.js';
import { isTgtadmError, type Tgtadm } from './tgtadm.js';
import type { TgtTarget } from './tgtadm-show.js';
import type { Tgtd, TgtdStatus } from './tgtd.js';

/** What a host needs to reach its copy over iSCSI (the domain's Access of kind `iscsi`). It holds no secret: the host was given those with its credentials. */
export type IscsiAccess = Extract<Access, { readonly kind: 'iscsi' }>;

export interface IscsiExporterOptions {
  /** The tgtd to configure; start() starts it and close() stops it. */
  readonly tgtd: Tgtd;
  /** Target names are `<targetPrefix>:<host>`. Default `iqn.2026-12.io.prestage`. */
  readonly targetPrefix?: string;
  /** The address put in the access handed to hosts. Default: the portal's, or this machine's first IPv4 when tgtd listens on all. */
  readonly advertise?: string;
  /** How long an export waits for tgtd to be back when it is restarting. Default 15 s. */
  readonly waitMs?: number;
  readonly logger?: Logger;
}

/** One session (I_T nexus) on a target of ours. */
export interface IscsiSession {
  /** The host whose target it is; null for a target this exporter does not know (removed at the next resync). */
  readonly hostId: string | null;
  readonly target: string;
  readonly sid: number;
  readonly initiator: string;
  readonly address: string | null;
}

export interface IscsiReconcileReport {
  /** Hosts whose copy is exported now. */
  readonly exported: readonly string[];
  /** Mappings that could not be exported, with why. */
  readonly failed: readonly { readonly hostId: string; readonly error: string }[];
}

/** A host's export as this exporter holds it: the truth tgtd is brought back to. */
interface Entry {
  readonly hostId: string;
  readonly tid: number;
  readonly target: string;
  readonly copyId: string;
  readonly volume: string;
  readonly auth: IscsiHostAuth;
}

const LUN = 1;
/** How long a release waits for a closed session's I/O before it deletes the target by force. */
const DRAIN_MS = 5_000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function firstIPv4(): string {
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

/** Runs tgtadm teardown steps where "already gone" is success. */
async function gone(step: Promise<void>): Promise<void> {
  try {
    await step;
  } catch (err) {
    if (!isTgtadmError(err, 'not-found')) throw err;
  }
}

export class IscsiExporter {
  readonly name = 'iscsi';
  private readonly tgtd: Tgtd;
  private readonly admin: Tgtadm;
  private readonly prefix: string;
  private readonly waitMs: number;
  private readonly logger: Logger | undefined;
  private readonly advertise: string | undefined;
  private readonly auths = new Map<string, IscsiHostAuth>();
  private readonly entries = new Map<string, Entry>();
  /** Every change to tgtd runs in this chain, one at a time: a restart's resync never interleaves with an export. */
  private queue: Promise<unknown> = Promise.resolve();
  private unsubscribe: (() => void) | undefined;
  private backingStores: readonly string[] = [];
  /** tgtd restarts whose targets were put back (some may have failed: they are logged). */
  private reapplied = 0;

  constructor(o: IscsiExporterOptions) {
    this.tgtd = o.tgtd;
    this.admin = o.tgtd.admin;
    this.prefix = checkTargetPrefix(o.targetPrefix ?? DEFAULT_TARGET_PREFIX);
    this.waitMs = o.waitMs ?? 15_000;
    this.logger = o.logger;
    this.advertise = o.advertise;
  }

  /** Starts tgtd. Call reconcile() next with every mapping, before hosts are told to log in. */
  async start(): Promise<void> {
    this.unsubscribe = this.tgtd.onStarted(({ restart, pid }) => {
      if (!restart) return;
      // A restarted tgtd comes up empty: put every target back.
      void this.serial(() => this.resync())
        .then((failed) => {
          this.reapplied++;
          this.logger?.info({ pid, targets: this.entries.size, failed: failed.length }, 'iSCSI targets re-applied after a tgtd restart');
        })
        .catch((err: unknown) => this.logger?.error({ err }, 'iSCSI targets could not be re-applied after a tgtd restart'));
    });
    await this.tgtd.start();
    try {
      const system = await this.admin.systemInfo();
      if (system.llds.iscsi !== 'ready') throw new PrestageError('PRESTAGE_UNAVAILABLE', `tgtd's iSCSI driver is ${system.llds.iscsi ?? 'missing'}, not ready`);
      if (!system.backingStores.includes('rdwr')) throw new PrestageError('PRESTAGE_UNAVAILABLE', `tgtd has no rdwr backing store (it has ${system.backingStores.join(', ')})`);
      this.backingStores = system.backingStores;
    } catch (err) {
      await this.tgtd.stop();
      throw err;
    }
  }

  /** `address:port` hosts dial. */
  get portal(): string {
    const { host, port } = this.tgtdPortal();
    const wildcard = host === '0.0.0.0' || host === '::';
    const address = this.advertise ?? (wildcard ? firstIPv4() : host);
    return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
  }

  /** The target name of a host. */
  targetName(hostId: string): string {
    return targetNameFor(hostId, this.prefix);
  }

  /**
   * Sets (or with null forgets) a host's initiator name and CHAP accounts. Bad input is an
   * InputError, an initiator name or CHAP user another host has a ConflictError; either changes
   * nothing. When the host's copy is exported, its target is rebuilt with the new credentials and
   * its sessions end: a session must not outlive the credentials that opened it. An exported
   * host's credentials cannot be forgotten (unexport it first).
   */
  async setHostAuth(hostId: string, auth: IscsiHostAuth | null): Promise<void> {
    this.targetName(hostId); // checks the host id
    const next = auth === null ? undefined : checkHostAuth(auth);
    if (next) this.checkUnique(hostId, next);
    return this.serial(async () => {
      const entry = this.entries.get(hostId);
      if (!next) {
        if (entry) throw new ConflictError(`host ${hostId} has copy ${entry.copyId} exported over iSCSI: unexport it before forgetting its credentials`, { hostId });
        this.auths.delete(hostId);
        return;
      }
      this.checkUnique(hostId, next); // again: a call queued before this one may have taken them
      const before = this.auths.get(hostId);
      this.auths.set(hostId, next);
      if (!entry || sameAuth(before, next)) return;
      // What tgtd should hold changes first: if applying it fails, a resync still reaches it, and
      // a tgtd that is restarting is given the new credentials by its resync.
      const updated = { ...entry, auth: next };
      this.entries.set(hostId, updated);
      if (this.tgtd.state !== 'RUNNING') return;
      try {
        await this.destroy(entry.tid, entry.auth);
        await this.create(updated);
      } catch (err) {
        throw wrap(err, `cannot apply the new iSCSI credentials of host ${hostId}`, { hostId });
      }
      this.logger?.info({ hostId, target: entry.target }, 'iSCSI credentials changed; sessions ended');
    });
  }

  /** The Exporter port's credentials hook: the iSCSI part of them (the NBD key opens no session here). */
  setHostCredentials(hostId: string, credentials: HostCredentials | null): Promise<void> {
    return this.setHostAuth(hostId, credentials?.iscsi ?? null);
  }

  /**
   * Exports the copy to the mapping's host: its target, LUN 1 = the copy's file, the host's CHAP
   * accounts, then its initiator name on the ACL. Exporting the exported copy again is a no-op;
   * a host with another copy exported is a ConflictError. A failure leaves nothing behind.
   */
  async export(mapping: Mapping, copy: ExportedCopy): Promise<IscsiAccess> {
    const { hostId } = mapping;
    const target = this.targetName(hostId);
    return this.serial(async () => {
      const existing = this.entries.get(hostId);
      if (existing) {
        if (existing.copyId === copy.id) return this.access(existing);
        throw new ConflictError(`host ${hostId} has copy ${existing.copyId} exported over iSCSI; unexport it before exporting ${copy.id}`, { hostId, copyId: existing.copyId });
      }
      const auth = this.requireAuth(hostId);
      await this.checkVolume(copy.volume);
      await this.whenRunning();
      const used = new Set([...this.entries.values()].map((e) => e.tid));
      const failed = (err: unknown) => wrap(err, `cannot export copy ${copy.id} to host ${hostId} over iSCSI`, { hostId, copyId: copy.id });
      let entry: Entry = { hostId, tid: lowestFree(used), target, copyId: copy.id, volume: copy.volume, auth };
      // tgtd holds only our targets since the last resync, so the ids we know are the ids in use;
      // a target made behind our back since then shows as 'exists', and only then is tgtd asked.
      try {
        await this.admin.newTarget(entry.tid, target).catch(async (err: unknown) => {
          if (!isTgtadmError(err, 'exists')) throw err;
          for (const t of await this.admin.targets()) used.add(t.tid);
          entry = { ...entry, tid: lowestFree(used) };
          await this.admin.newTarget(entry.tid, target);
        });
      } catch (err) {
        throw failed(err);
      }
      try {
        await this.equip(entry);
      } catch (err) {
        await this.destroy(entry.tid, auth).catch((undo: unknown) => this.logger?.error({ err: undo, hostId }, 'could not undo a failed iSCSI export; the next resync removes it'));
        throw failed(err);
      }
      this.entries.set(hostId, entry);
      this.logger?.info({ hostId, copyId: copy.id, target, tid: entry.tid }, 'exported over iSCSI');
      return this.access(entry);
    });
  }

  /**
   * Takes the host's access away at once: its initiator off the ACL (so its reconnect is refused),
   * its connections closed, its target and LUN deleted, its accounts removed. No export is fine.
   */
  unexport(hostId: string): Promise<void> {
    return this.serial(async () => {
      const entry = this.entries.get(hostId);
      this.entries.delete(hostId);
      // A tgtd that is down holds no sessions, and its restart puts back only what entries hold.
      if (!entry || this.tgtd.state !== 'RUNNING') return;
      try {
        await this.destroy(entry.tid, entry.auth);
      } catch (err) {
        if (this.tgtd.state === 'RUNNING') throw wrap(err, `cannot remove the iSCSI target of host ${hostId}`, { hostId });
      }
      this.logger?.info({ hostId, copyId: entry.copyId, target: entry.target }, 'unexported over iSCSI');
    });
  }

  /**
   * Exports exactly these mappings (at start: every mapping there is), removing any other target
   * and account tgtd holds. A mapping that cannot be exported is reported, not thrown, so one bad
   * copy does not keep every other host from its own.
   */
  reconcile(mappings: readonly { readonly mapping: Mapping; readonly copy: ExportedCopy }[]): Promise<IscsiReconcileReport> {
    return this.serial(async () => {
      const failed: { hostId: string; error: string }[] = [];
      const previous = new Map(this.entries);
      this.entries.clear();
      const used = new Set<number>();
      const wanted: Omit<Entry, 'tid'>[] = [];
      for (const { mapping, copy } of mappings) {
        const { hostId } = mapping;
        try {
          if (wanted.some((w) => w.hostId === hostId)) throw new ConflictError(`host ${hostId} is mapped twice`, { hostId });
          const auth = this.requireAuth(hostId);
          await this.checkVolume(copy.volume);
          wanted.push({ hostId, target: this.targetName(hostId), copyId: copy.id, volume: copy.volume, auth });
          const kept = previous.get(hostId);
          if (kept) used.add(kept.tid);
        } catch (err) {
          failed.push({ hostId, error: (err as Error).message });
        }
      }
      for (const w of wanted) {
        const kept = previous.get(w.hostId);
        const tid = kept && kept.copyId === w.copyId ? kept.tid : lowestFree(used);
        used.add(tid);
        this.entries.set(w.hostId, { ...w, tid });
      }
      await this.whenRunning();
      failed.push(...(await this.resync()));
      for (const f of failed) this.logger?.error({ hostId: f.hostId, error: f.error }, 'mapping not exported over iSCSI');
      return { exported: [...this.entries.keys()], failed };
    });
  }

  /** Sessions on our targets now, by host (tgt lists the connection each session began with). */
  async sessions(): Promise<IscsiSession[]> {
    const byTarget = new Map([...this.entries.values()].map((e) => [e.target, e.hostId]));
    const out: IscsiSession[] = [];
    for (const t of await this.admin.targets()) {
      for (const s of t.sessions) out.push({ hostId: byTarget.get(t.name) ?? null, target: t.name, sid: s.sid, initiator: s.initiator, address: s.address });
    }
    return out;
  }

  async accessOf(hostId: string, copy: Pick<Copy, 'id'> | null): Promise<ExporterAccess[]> {
    const auth = this.auths.get(hostId);
    const entry = this.entries.get(hostId);
    const credential = auth
      ? `initiator ${auth.initiator}, CHAP user ${auth.chap.user}${auth.mutual ? `, mutual CHAP user ${auth.mutual.user}` : ''}; the secrets: prestage host iscsi-credential ${hostId}`
      : 'no iSCSI login set for this host';
    const target = this.targetName(hostId);
    const sessions = this.tgtd.state === 'RUNNING' && entry ? ((await this.admin.targets()).find((t) => t.name === target)?.sessions.length ?? 0) : 0;
    return [{ exporter: 'iscsi', serves: true, access: entry && copy !== null && entry.copyId === copy.id ? this.access(entry) : null, credential, sessions }];
  }

  /** Hosts with a copy exported here now. */
  exportedHosts(): readonly string[] {
    return [...this.entries.keys()];
  }

  /** tgtd's state, the portal, how many hosts are exported, and after how many tgtd restarts the targets were put back. */
  status(): { readonly tgtd: TgtdStatus; readonly portal: string; readonly exported: number; readonly reapplied: number } {
    return { tgtd: this.tgtd.status(), portal: this.portal, exported: this.entries.size, reapplied: this.reapplied };
  }

  /** Stops tgtd (every session ends). The exports are forgotten; a new start reconciles them again. */
  close(): Promise<void> {
    this.unsubscribe?.();
    return this.serial(async () => {
      await this.tgtd.stop();
      this.entries.clear();
    });
  }

  private tgtdPortal(): { host: string; port: string } {
    const text = this.tgtd.portal;
    const at = text.lastIndexOf(':');
    return { host: text.slice(0, at).replace(/^\[|\]$/g, ''), port: text.slice(at + 1) };
  }

  private access(e: Entry): IscsiAccess {
    return {
      kind: 'iscsi',
      portal: this.portal,
      target: e.target,
      lun: LUN,
      initiator: e.auth.initiator,
      chapUser: e.auth.chap.user,
      ...(e.auth.mutual && { mutualChapUser: e.auth.mutual.user }),
    };
  }

  private requireAuth(hostId: string): IscsiHostAuth {
    const auth = this.auths.get(hostId);
    if (!auth) throw new ConflictError(`host ${hostId} has no iSCSI initiator name and CHAP account: set them before exporting to it over iSCSI`, { hostId });
    return auth;
  }

  /** Initiator names and CHAP users are one host's each: tgt keeps accounts in one table by name. */
  private checkUnique(hostId: string, auth: IscsiHostAuth): void {
    const mine = [auth.chap.user, auth.mutual?.user].filter((u): u is string => u !== undefined);
    for (const [other, a] of this.auths) {
      if (other === hostId) continue;
      if (a.initiator === auth.initiator) throw new ConflictError(`initiator name ${auth.initiator} belongs to host ${other}`, { hostId, other });
      const theirs = [a.chap.user, a.mutual?.user];
      const clash = mine.find((u) => theirs.includes(u));
      if (clash) throw new ConflictError(`CHAP user ${clash} belongs to host ${other}`, { hostId, other });
    }
  }

  /** tgt's rdwr backing store serves files and block devices; an RBD copy has neither here. */
  private async checkVolume(volume: string): Promise<void> {
    if (!volume.startsWith('/')) {
      const rbd = this.backingStores.includes('rbd') ? "tgtd has an rbd backing store, but this exporter does not use it yet" : "this tgtd has no rbd backing store (Debian's tgt-rbd adds one)";
      throw new ConflictError(`copy volume ${volume} is not a local file: the iSCSI exporter serves files only (${rbd})`, { volume });
    }
    let st;
    try {
      st = await stat(volume);
    } catch (err) {
      throw new ConflictError(`copy volume ${volume} cannot be read: ${(err as Error).message}`, { volume }, { cause: err });
    }
    if (!st.isFile() && !st.isBlockDevice()) throw new ConflictError(`copy volume ${volume} is neither a file nor a block device`, { volume });
  }

  private async whenRunning(): Promise<void> {
    await this.tgtd.whenRunning(this.waitMs);
  }

  /** Builds a host's target, then equips it. */
  private async create(e: Entry): Promise<void> {
    await this.admin.newTarget(e.tid, e.target);
    await this.equip(e);
  }

  /** The made target's LUN, CHAP accounts and, last, its ACL: nobody logs in to a target half set up. */
  private async equip(e: Entry): Promise<void> {
    await this.admin.newLun(e.tid, LUN, { path: e.volume, type: 'rdwr' });
    await this.putAccount(e.auth.chap.user, e.auth.chap.secret);
    await this.admin.bindAccount(e.tid, e.auth.chap.user);
    if (e.auth.mutual) {
      await this.putAccount(e.auth.mutual.user, e.auth.mutual.secret);
      await this.admin.bindAccount(e.tid, e.auth.mutual.user, { outgoing: true });
    }
    await this.admin.bindInitiator(e.tid, e.auth.initiator);
  }

  /** Accounts hold secrets tgtadm cannot show, so one left from before is replaced, never trusted. */
  private async putAccount(user: string, secret: string): Promise<void> {
    try {
      await this.admin.newAccount(user, secret);
    } catch (err) {
      if (!isTgtadmError(err, 'exists')) throw err;
      await this.admin.deleteAccount(user);
      await this.admin.newAccount(user, secret);
    }
  }

  /**
   * Takes a target down in the order that ends its sessions for good; what is gone already is
   * skipped. `acl`: the initiator names to take off first (by default the host's).
   */
  private async destroy(tid: number, auth: IscsiHostAuth | undefined, acl: readonly string[] = auth ? [auth.initiator] : []): Promise<void> {
    // Off the ACL first: libiscsi and open-iscsi log in again the moment a connection drops.
    for (const name of acl) if (isIscsiName(name)) await gone(this.admin.unbindInitiator(tid, name));
    await this.endSessions(tid);
    try {
      await this.admin.deleteTarget(tid);
    } catch (err) {
      if (isTgtadmError(err, 'not-found')) {
        // gone already
      } else if (isTgtadmError(err, 'busy')) {
        // A session still waits for its I/O. tgt 1.0.85 exits when a forced delete finds a
        // session it could not free; the supervisor then restarts it and every other target is
        // put back, which beats leaving this host its session.
        this.logger?.warn({ tid }, 'an iSCSI session did not end in time; deleting its target by force');
        await gone(this.admin.deleteTarget(tid, { force: true }));
      } else {
        throw err;
      }
    }
    if (auth) {
      await gone(this.admin.deleteAccount(auth.chap.user));
      if (auth.mutual) await gone(this.admin.deleteAccount(auth.mutual.user));
    }
  }

  /**
   * Closes every connection of the target, then waits (up to DRAIN_MS) until tgt has let go of
   * their sessions: a connection closes at once, but its session lives until the I/O it had in
   * the backing store has finished.
   */
  private async endSessions(tid: number): Promise<void> {
    const closed = new Set<string>();
    const deadline = performance.now() + DRAIN_MS;
    for (;;) {
      let connections;
      try {
        connections = await this.admin.connections(tid);
      } catch (err) {
        if (isTgtadmError(err, 'not-found')) return;
        throw err;
      }
      if (connections.length === 0) return;
      for (const c of connections) {
        const key = `${c.sid}/${c.cid}`;
        if (closed.has(key)) continue;
        closed.add(key);
        await gone(this.admin.deleteConnection(tid, c.sid, c.cid));
      }
      if (performance.now() > deadline) return;
      await sleep(10);
    }
  }

  /**
   * Brings tgtd to what `entries` holds: targets that differ or are unknown are taken down,
   * accounts nobody uses deleted, missing targets built. Returns the hosts whose target could
   * not be built (they stay in `entries`: the next resync tries again).
   */
  private async resync(): Promise<{ hostId: string; error: string }[]> {
    const byTid = new Map([...this.entries.values()].map((e) => [e.tid, e]));
    const present = new Set<number>();
    for (const t of await this.admin.targets()) {
      const e = byTid.get(t.tid);
      if (e && matches(t, e)) {
        present.add(t.tid);
        continue;
      }
      this.logger?.warn({ tid: t.tid, target: t.name }, 'removing an iSCSI target that differs from the exports');
      await this.destroy(t.tid, undefined, t.acl);
    }
    const users = new Set([...this.entries.values()].flatMap((e) => [e.auth.chap.user, ...(e.auth.mutual ? [e.auth.mutual.user] : [])]));
    for (const user of await this.admin.accounts()) if (!users.has(user)) await gone(this.admin.deleteAccount(user));
    const failed: { hostId: string; error: string }[] = [];
    for (const e of this.entries.values()) {
      if (present.has(e.tid)) continue;
      try {
        await this.create(e);
      } catch (err) {
        failed.push({ hostId: e.hostId, error: (err as Error).message });
        await this.destroy(e.tid, e.auth).catch(() => undefined);
      }
    }
    return failed;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
}

function matches(t: TgtTarget, e: Entry): boolean {
  const lun = t.luns.find((l) => l.lun === LUN);
  return (
    t.name === e.target &&
    t.luns.length === 2 && // LUN 0 (the controller) and ours
    lun?.backingStorePath === e.volume &&
    lun.backingStoreType === 'rdwr' &&
    t.acl.length === 1 &&
    t.acl[0] === e.auth.initiator &&
    t.incomingAccounts.length === 1 &&
    t.incomingAccounts[0] === e.auth.chap.user &&
    t.outgoingAccount === (e.auth.mutual?.user ?? null)
  );
}

function sameAuth(a: IscsiHostAuth | undefined, b: IscsiHostAuth | undefined): boolean {
  if (!a || !b) return a === b;
  return a.initiator === b.initiator && a.chap.user === b.chap.user && a.chap.secret === b.chap.secret && a.mutual?.user === b.mutual?.user && a.mutual?.secret === b.mutual?.secret;
}

function lowestFree(used: ReadonlySet<number>): number {
  let tid = 1;
  while (used.has(tid)) tid++;
  return tid;
}

/** The error with what was being done in front, keeping its code and cause. */
function wrap(err: unknown, doing: string, details: Record<string, unknown>): PrestageError {
  if (err instanceof PrestageError) return new PrestageError(err.code, `${doing}: ${err.message}`, { ...err.details, ...details }, { cause: err });
  return new PrestageError('PRESTAGE_INTERNAL', `${doing}: ${(err as Error).message}`, details, { cause: err });
}
