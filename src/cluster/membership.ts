import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { errnoCode, newId, type ClusterBus, type InstanceRecord, type PoolLease, type ReapedWork, type Store } from '../domain/index.js';

export interface MembershipOptions {
  readonly store: Store;
  readonly bus: ClusterBus;
  readonly logger: Logger;
  readonly version: string;
  /** `--instance-name`; default host:pid. */
  readonly name?: string;
  /** A lease not renewed for this long is free, and an instance silent for this long is dead. Default 5000 ms. */
  readonly leaseTtlMs?: number;
  /** Heartbeat and lease renewal period. Default a fifth of the lease. */
  readonly heartbeatMs?: number;
  /**
   * True when nothing else can be running on this state (SQLite behind the data-directory lock):
   * every other instance on record is dead at once, no waiting for its lease to run out.
   */
  readonly exclusive: boolean;
  /** Removes the volumes a dead instance left (called once per reaped instance, by its reaper). */
  readonly onReaped: (dead: InstanceRecord, work: ReapedWork) => Promise<void>;
  /** Copies in flight here for a pool: a lease is handed back only when there are none. */
  readonly busy?: (source: string) => boolean;
  /**
   * Each heartbeat, and at once when a lease is taken: the replenisher looks at its pools again
   * (spares taken on other instances are seen within a heartbeat even if no message came).
   */
  readonly wake?: () => void;
  readonly now?: () => number;
}

/** A lease held here, and until when this instance may trust it without renewing (its own clock). */
interface Held {
  readonly epoch: number;
  validUntil: number;
}

export interface InstanceView extends InstanceRecord {
  readonly live: boolean;
  readonly self: boolean;
  /** Pools whose lease it holds. */
  readonly pools: readonly string[];
}

/**
 * This instance among the others on one state database: its row and heartbeat, the pool leases
 * it holds (a fair share of the pools, taken when free or expired, renewed each heartbeat, handed
 * back when the share shrinks), and the reaping of dead instances, whose unfinished copies and
 * builds it fails and removes. PostgreSQL (or SQLite) is the only arbiter: every step is one
 * compare-and-set in the store; there is no consensus here.
 *
 * Clocks: lease expiry compares this instance's clock with the taker's; they are assumed to agree
 * within a fraction of the lease (NTP). A skew only delays or hastens a takeover: the fence (the
 * epoch every spare carries, checked when it is marked ready) keeps a stale leader harmless.
 */
export class Membership {
  private idValue = '';
  private readonly held = new Map<string, Held>();
  /** The last view of the others' rows and leases (from the last heartbeat). */
  private instancesSeen: InstanceRecord[] = [];
  private leasesSeen: PoolLease[] = [];
  private poolCount = 0;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private readonly ttlMs: number;
  private readonly heartbeatMs: number;
  private readonly now: () => number;
  private readonly host = hostname();
  private addresses: { api: string | null; nbd: string | null } = { api: null, nbd: null };
  /** When this instance's own last heartbeat got through. */
  private lastBeat = 0;

  constructor(private readonly o: MembershipOptions) {
    this.ttlMs = o.leaseTtlMs ?? 5000;
    this.heartbeatMs = o.heartbeatMs ?? Math.max(50, Math.floor(this.ttlMs / 5));
    this.now = o.now ?? Date.now;
  }

  get id(): string {
    return this.idValue;
  }

  /** Registers this instance and reaps the dead; call before the state is reconciled. */
  async join(addresses: { api: string | null; nbd: string | null }): Promise<void> {
    this.addresses = addresses;
    await this.register();
    this.instancesSeen = await this.o.store.listInstances();
    await this.reapDead(this.instancesSeen);
    await this.refresh();
  }

  /** Starts heartbeats and lease-taking (after reconcile: from here on, pools are refilled). */
  async start(): Promise<void> {
    await this.tick();
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.tick().finally(() => this.schedule());
    }, this.heartbeatMs);
    this.timer.unref();
  }

  /** A pass now (a pool appeared, say), on top of the periodic ones. */
  poke(): void {
    void this.tick();
  }

  private async register(): Promise<void> {
    const at = this.iso(this.now());
    this.idValue = newId('inst');
    this.held.clear();
    const record: InstanceRecord = {
      id: this.idValue,
      name: this.o.name ?? `${this.host}:${process.pid}`,
      host: this.host,
      pid: process.pid,
      version: this.o.version,
      api: this.addresses.api,
      nbd: this.addresses.nbd,
      startedAt: at,
      heartbeatAt: at,
      stoppedAt: null,
      reapedAt: null,
      reapedBy: null,
    };
    await this.o.store.registerInstance(record, { type: 'instance.started', subject: record.id, data: { name: record.name, host: record.host, pid: record.pid, api: record.api, nbd: record.nbd } });
    this.o.logger.info({ instance: record.id, name: record.name }, 'instance registered');
  }

  /** How many pools this instance leads. */
  get leading(): number {
    return this.held.size;
  }

  /** The epoch of this pool's lease when this instance holds it (and may still trust it). */
  leaseFor(source: string): number | undefined {
    const h = this.held.get(source);
    return h !== undefined && h.validUntil > this.now() ? h.epoch : undefined;
  }

  /**
   * Takes the pool's lease now if the last view saw it free and this instance is under its fair
   * share (a pool just made need not wait for the next heartbeat to be refilled).
   */
  async tryLead(source: string): Promise<number | undefined> {
    const have = this.leaseFor(source);
    if (have !== undefined || this.stopped) return have;
    const nowMs = this.now();
    const lease = this.leasesSeen.find((l) => l.source === source);
    if (lease && lease.instanceId !== this.id && !this.leaseFree(lease, nowMs)) return undefined;
    if (this.held.size >= this.share(Math.max(this.poolCount, this.held.size + 1))) return undefined;
    return this.acquire(source, nowMs);
  }

  /** One attempt per pool at a time (a replenisher pass and a heartbeat may both try): a second would raise the epoch again. */
  private readonly acquiring = new Map<string, Promise<number | undefined>>();

  private acquire(source: string, nowMs: number): Promise<number | undefined> {
    let attempt = this.acquiring.get(source);
    if (!attempt) {
      attempt = this.acquireNow(source, nowMs).finally(() => this.acquiring.delete(source));
      this.acquiring.set(source, attempt);
    }
    return attempt;
  }

  private async acquireNow(source: string, nowMs: number): Promise<number | undefined> {
    const epoch = await this.o.store.acquireLease(source, this.id, this.iso(nowMs), this.iso(nowMs + this.ttlMs), { type: 'pool.leader', subject: source, data: { instance: this.id } });
    if (epoch === undefined) return undefined;
    this.held.set(source, { epoch, validUntil: nowMs + this.ttlMs - this.heartbeatMs });
    this.leasesSeen = [...this.leasesSeen.filter((l) => l.source !== source), { source, instanceId: this.id, epoch, expiresAt: this.iso(nowMs + this.ttlMs) }];
    this.o.logger.info({ pool: source, epoch }, 'leading the pool');
    this.o.wake?.();
    return epoch;
  }

  /** Pools per live instance, rounded up: what this one takes at most. */
  private share(pools: number): number {
    const live = Math.max(1, this.instancesSeen.filter((i) => i.id === this.id || this.alive(i, this.now())).length);
    return Math.ceil(pools / live);
  }

  /** One heartbeat: renew, reap, take a fair share of the free pools, hand back the excess. */
  tick(): Promise<void> {
    if (this.ticking) {
      this.again = true;
      return this.ticking;
    }
    this.ticking = (async () => {
      do {
        this.again = false;
        try {
          await this.heartbeat();
          this.o.wake?.();
        } catch (err) {
          this.o.logger.warn({ err, code: errnoCode(err) }, 'heartbeat failed; leases lapse unless it comes back in time');
        }
      } while (this.again && !this.stopped);
    })().finally(() => (this.ticking = undefined));
    return this.ticking;
  }

  private async heartbeat(): Promise<void> {
    if (this.stopped) return;
    const { store, logger } = this.o;
    const t = this.now();
    if (!(await store.heartbeatInstance(this.id, this.iso(t)))) {
      // Declared dead while it could not speak (paused, cut off): its copies in flight were failed
      // and its leases went to others. It carries on as a new instance, owning nothing from before.
      logger.error({ instance: this.id }, 'this instance was declared dead by another (paused or cut off past its lease); it goes on as a new instance');
      await this.register();
    }
    const renewed = await store.renewLeases(this.id, this.iso(t + this.ttlMs));
    const still = new Set(renewed.map((l) => l.source));
    for (const source of [...this.held.keys()]) {
      if (still.has(source)) continue;
      this.held.delete(source);
      logger.warn({ pool: source }, 'lost the lease of a pool (another instance took it)');
    }
    for (const l of renewed) this.held.set(l.source, { epoch: l.epoch, validUntil: t + this.ttlMs - this.heartbeatMs });

    const [instances, leases, pools] = await Promise.all([store.listInstances(), store.listLeases(), store.listPools()]);
    this.instancesSeen = instances;
    this.leasesSeen = leases;
    this.poolCount = pools.length;
    // Back from a silence of its own (the database was away for everyone, say): the others have
    // not had their turn to speak yet, so nobody is declared dead on this heartbeat.
    const silent = this.lastBeat !== 0 && t - this.lastBeat > this.ttlMs;
    this.lastBeat = t;
    if (!silent) await this.reapDead(instances);

    const nowMs = this.now();
    const share = this.share(pools.length);
    const existing = new Set(pools.map((p) => p.source));
    for (const source of [...this.held.keys()]) {
      if (existing.has(source)) continue;
      this.held.delete(source);
      await store.releaseLease(source, this.id);
    }
    const byPool = new Map(leases.map((l) => [l.source, l]));
    // Each instance walks the free pools from its own offset, so starters do not all race for the first.
    const order = pools.map((p) => p.source).sort();
    const offset = order.length === 0 ? 0 : hashOf(this.id) % order.length;
    for (let k = 0; k < order.length && this.held.size < share; k++) {
      const source = order[(offset + k) % order.length]!;
      if (this.held.has(source)) continue;
      const lease = byPool.get(source);
      if (lease && !this.leaseFree(lease, nowMs)) continue;
      await this.acquire(source, nowMs);
    }
    // Above the share (another instance joined): hand back one idle pool per heartbeat.
    if (this.held.size > share) {
      const idle = [...this.held.keys()].find((s) => !(this.o.busy?.(s) ?? false));
      if (idle !== undefined) {
        this.held.delete(idle);
        await store.releaseLease(idle, this.id);
        logger.info({ pool: idle, share }, 'handed a pool back for another instance to lead');
      }
    }
  }

  /** A lease nobody may trust any more: run out, or held by an instance known gone. */
  private leaseFree(lease: PoolLease, nowMs: number): boolean {
    if (lease.expiresAt < this.iso(nowMs)) return true;
    // The view lists the instances not stopped or reaped: a holder missing from it is gone.
    return !this.instancesSeen.some((i) => i.id === lease.instanceId);
  }

  /** Running as far as anyone can tell: not stopped, not reaped, heard of within the lease. */
  alive(i: InstanceRecord, nowMs: number): boolean {
    if (i.id === this.id) return !this.stopped;
    if (i.stoppedAt !== null || i.reapedAt !== null) return false;
    if (this.o.exclusive) return false;
    if (Date.parse(i.heartbeatAt) < nowMs - this.ttlMs) return false;
    // On this machine a process that is gone is known dead at once, without waiting for its lease.
    if (i.host === this.host && !processRunning(i.pid)) return false;
    return true;
  }

  private async reapDead(instances: readonly InstanceRecord[]): Promise<void> {
    const nowMs = this.now();
    for (const i of instances) {
      if (i.id === this.id || i.stoppedAt !== null || i.reapedAt !== null || this.alive(i, nowMs)) continue;
      const work = await this.o.store.reapInstance(i.id, this.id, this.iso(nowMs), { type: 'instance.reaped', subject: i.id, data: { name: i.name, by: this.id, heartbeatAt: i.heartbeatAt } });
      if (!work) continue; // another instance reaped it first
      this.o.logger.warn({ instance: i.id, name: i.name, heartbeatAt: i.heartbeatAt, copies: work.copies.length, builds: work.builds.length }, 'an instance died; its unfinished work is undone');
      await this.o.onReaped(i, work);
    }
  }

  /**
   * Whether what an instance left (temporary files) may be removed: it is gone. A file that names
   * no instance (written before instances had ids) is removed only when no other one is alive.
   */
  isGone(instanceId: string | null): boolean {
    if (instanceId === null) return this.othersAlive() === 0;
    if (instanceId === this.id) return false;
    const i = this.instancesSeen.find((x) => x.id === instanceId);
    return i === undefined || !this.alive(i, this.now());
  }

  /** The instances on record that have not stopped or been reaped, with the pools each leads. */
  async view(): Promise<InstanceView[]> {
    const [instances, leases] = await Promise.all([this.o.store.listInstances(), this.o.store.listLeases()]);
    const nowIso = this.iso(this.now());
    return instances.map((i) => ({
        ...i,
        live: this.alive(i, this.now()),
        self: i.id === this.id,
        pools: leases.filter((l) => l.instanceId === i.id && l.expiresAt >= nowIso).map((l) => l.source),
      }));
  }

  /** The others still alive (start-up cleanup of files without rows waits until this is 0). */
  othersAlive(): number {
    const nowMs = this.now();
    return this.instancesSeen.filter((i) => i.id !== this.id && this.alive(i, nowMs)).length;
  }

  /** Refreshes the view of the others (start-up, before cleaning files). */
  async refresh(): Promise<void> {
    this.instancesSeen = await this.o.store.listInstances();
  }

  /** A clean stop: leases handed back at once, so others take the pools without waiting. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.ticking?.catch(() => undefined);
    this.held.clear();
    await this.o.store.stopInstance(this.id, this.iso(this.now()), { type: 'instance.stopped', subject: this.id }).catch((err: unknown) => this.o.logger.warn({ err }, 'instance stop not recorded; its leases run out instead'));
    this.o.bus.publish({ kind: 'pools' });
  }

  private iso(ms: number): string {
    return new Date(ms).toISOString();
  }
}

function processRunning(pid: number): boolean {
  if (pid === process.pid) return false; // an earlier incarnation with our pid: not us, so not running
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errnoCode(e) === 'EPERM';
  }
}

function hashOf(s: string): number {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0;
  return h;
}
