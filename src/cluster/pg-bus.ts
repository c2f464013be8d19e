import type { Logger } from 'pino';
import pg from 'pg';
import type { ClusterBus, ClusterMessage } from '../domain/index.js';

/** Below PostgreSQL's 8000-byte limit on a NOTIFY payload. */
const MAX_PAYLOAD = 7900;

export interface PgBusOptions {
  readonly url: string;
  readonly schema?: string;
  /** This instance: its own notifications come back to it and are dropped. */
  readonly instanceId: () => string;
  readonly logger: Logger;
  /** Pause before connecting again after the connection was lost. Default 1000 ms. */
  readonly retryMs?: number;
}

/**
 * Wake-ups between instances through PostgreSQL's LISTEN/NOTIFY, on one connection of its own.
 * The channel is named after the schema, so instances of separate schemas in one database do
 * not hear each other. A lost connection is made again; every (re)connection after the first
 * calls the resync handlers, because notifications sent meanwhile are gone.
 */
export class PgBus implements ClusterBus {
  private client: pg.Client | undefined;
  private readonly handlers: ((m: ClusterMessage) => void)[] = [];
  private readonly resyncs: (() => void)[] = [];
  private readonly channel: string;
  private closed = false;
  private connectedOnce = false;
  private retry: NodeJS.Timeout | undefined;
  /** Messages waiting for the next NOTIFY, and whether one is on its way. */
  private outbox: ClusterMessage[] = [];
  private sending = false;

  private constructor(private readonly o: PgBusOptions) {
    this.channel = `prestage:${o.schema ?? 'public'}`;
  }

  static async open(o: PgBusOptions): Promise<PgBus> {
    const bus = new PgBus(o);
    await bus.connect();
    return bus;
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.o.url, application_name: 'prestage bus' });
    client.on('error', (err) => this.lost(client, err));
    client.on('end', () => this.lost(client, new Error('connection ended')));
    client.on('notification', (n) => {
      if (n.channel !== this.channel || n.payload === undefined) return;
      this.deliver(n.payload);
    });
    await client.connect();
    await client.query(`LISTEN ${client.escapeIdentifier(this.channel)}`);
    if (this.closed) {
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
    if (this.connectedOnce) {
      this.o.logger.info('cluster bus connected again; resynchronizing');
      for (const r of this.resyncs) r();
    }
    this.connectedOnce = true;
  }

  private lost(client: pg.Client, err: unknown): void {
    if (this.client !== client) return;
    this.client = undefined;
    void client.end().catch(() => undefined);
    if (this.closed) return;
    this.o.logger.warn({ err }, 'cluster bus lost its connection; connecting again');
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.closed || this.retry) return;
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.connect().catch(() => this.scheduleRetry());
    }, this.o.retryMs ?? 1000);
    this.retry.unref();
  }

  private deliver(payload: string): void {
    let batch: { from?: unknown; messages?: unknown } | undefined;
    try {
      batch = JSON.parse(payload) as { from?: unknown; messages?: unknown };
    } catch {
      this.o.logger.warn({ payload: payload.slice(0, 200) }, 'cluster bus: a notification that is not JSON; ignored');
      return;
    }
    if (batch.from === this.o.instanceId() || !Array.isArray(batch.messages)) return;
    for (const m of batch.messages as ClusterMessage[]) {
      for (const h of this.handlers) {
        try {
          h(m);
        } catch (err) {
          this.o.logger.error({ err, kind: m.kind }, 'cluster bus handler failed');
        }
      }
    }
  }

  /**
   * Queued and sent in batches: one NOTIFY carries every message published while the previous
   * one was on its way (under load, one per round trip instead of one per provision), in order.
   */
  publish(message: ClusterMessage): void {
    if (!this.client) return;
    // One "events were appended" per batch says it all: under load there is one per provision.
    if (message.kind === 'events' && this.outbox.some((m) => m.kind === 'events')) return;
    this.outbox.push(message);
    if (!this.sending) void this.flush();
  }

  private async flush(): Promise<void> {
    this.sending = true;
    try {
      while (this.outbox.length > 0 && this.client) {
        const client = this.client;
        const from = this.o.instanceId();
        // NOTIFY payloads stop short of 8000 bytes.
        const batch: ClusterMessage[] = [];
        let size = 64;
        while (this.outbox.length > 0) {
          const len = JSON.stringify(this.outbox[0]).length + 1;
          if (batch.length > 0 && size + len > MAX_PAYLOAD) break;
          batch.push(this.outbox.shift()!);
          size += len;
        }
        await client.query('SELECT pg_notify($1, $2)', [this.channel, JSON.stringify({ from, messages: batch })]).catch((err: unknown) => this.o.logger.debug({ err }, 'cluster bus: notifications were not sent'));
      }
    } finally {
      this.sending = false;
      // Lost with the connection: the others' resync makes up for them.
      if (!this.client) this.outbox = [];
    }
  }

  subscribe(handler: (message: ClusterMessage) => void): void {
    this.handlers.push(handler);
  }

  onResync(handler: () => void): void {
    this.resyncs.push(handler);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    const c = this.client;
    this.client = undefined;
    await c?.end().catch(() => undefined);
  }
}
