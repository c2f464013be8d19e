import { createServer, connect, type Server, type Socket } from 'node:net';
import { TEST_PG_URL } from './postgres.js';

/** A relay to PostgreSQL that can be cut (every connection closed, new ones refused) and restored. */
export class Relay {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  constructor(
    private readonly target: { host: string; port: number },
    readonly port: number,
  ) {}

  async up(): Promise<void> {
    this.server = createServer((client) => {
      const upstream = connect(this.target.port, this.target.host);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => this.server!.listen(this.port, '127.0.0.1', resolve));
  }

  async down(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server = undefined;
  }
}


/** A relay on a free port in front of the test PostgreSQL, up, and the URL that goes through it. */
export async function pgRelay(): Promise<{ relay: Relay; url: string }> {
  const target = new URL(TEST_PG_URL);
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as { port: number }).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const relay = new Relay({ host: target.hostname, port: Number(target.port || 5432) }, port);
  await relay.up();
  const via = new URL(TEST_PG_URL);
  via.host = `127.0.0.1:${port}`;
  return { relay, url: via.href };
}
