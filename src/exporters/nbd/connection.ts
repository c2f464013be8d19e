/**
 * One client socket: moves bytes between it and the handshake machine, upgrades it to TLS on
 * STARTTLS, then runs transmission requests. The protocol decisions live in `handshake.ts` and
 * `transmission.ts`; this file only schedules (timeouts, backpressure, shutdown).
 */
import type { Socket } from 'node:net';
import type { X509Certificate } from 'node:crypto';
import { TLSSocket, type SecureContext, type TlsOptions } from 'node:tls';
import type { Logger } from 'pino';
import type { Handshake, NbdExportInfo, Negotiated } from './handshake.js';
import { NBD_CMD, NbdProtocolError, RequestParser, type NbdRequest } from './protocol.js';
import type { NbdStats } from './stats.js';
import { ReadBuffers, execute, type BlockDevice, type TransmissionContext } from './transmission.js';

/** An export as a connection serves it: what the handshake shows plus the storage behind it. */
export interface DeviceExport extends NbdExportInfo {
  readonly device: BlockDevice;
}

export interface ConnectionLimits {
  /**
   * A client not in transmission this long after it connected is dropped. A deadline, not an
   * idle timer: a client trickling a byte now and then must not hold a connection for ever.
   */
  readonly negotiationTimeoutMs: number;
  readonly maxRequestLength: number;
  /** Requests read but not yet answered; past this the socket is not read. */
  readonly maxInFlight: number;
  /**
   * Bytes of READ/WRITE data in those requests; past this the socket is not read. A request is
   * started while the sum is below it, so the data held is under this plus `maxRequestLength`.
   */
  readonly maxInFlightBytes: number;
}

/**
 * Says whether a host may open one more connection, once TLS proved which host it is; a yes
 * counts the connection against the host until it closes.
 */
export type AdmitHost = (identity: string) => boolean;

/**
 * How a client proves which host it is. `psk`: by the key of its PSK identity (the host id).
 * `x509`: by a client certificate our CA signed; the host id is the certificate's subject CN.
 */
export type TlsSetup =
  | {
      readonly mode: 'psk';
      readonly secureContext: SecureContext;
      /** The PSK of an identity, or undefined to refuse it. */
      readonly keys: (identity: string) => Buffer | undefined;
    }
  | {
      readonly mode: 'x509';
      readonly secureContext: SecureContext;
      /** The CAs whose signature on a client certificate proves a host's id. */
      readonly clientCas: readonly X509Certificate[];
    };

/** `1.3.6.1.5.5.7.3.2`: TLS Web Client Authentication. */
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

/**
 * The host id a client certificate names (its subject CN), if one of our CAs issued and signed
 * it, it is valid now and may be used by a client. Node checks nothing of this for a TLSSocket
 * made outside a tls.Server (OpenSSL's verdict is only read there), so we check it here.
 */
function certificateIdentity(secure: TLSSocket, cas: readonly X509Certificate[]): string | undefined {
  const peer = secure.getPeerX509Certificate();
  if (peer === undefined) return undefined;
  const now = Date.now();
  if (now < Date.parse(peer.validFrom) || now > Date.parse(peer.validTo)) return undefined;
  if (!cas.some((ca) => peer.checkIssued(ca) && peer.verify(ca.publicKey))) return undefined;
  const usage = peer.keyUsage as string[] | undefined; // extended key usage; absent means any
  if (usage !== undefined && !usage.includes(CLIENT_AUTH)) return undefined;
  const cn = secure.getPeerCertificate().subject?.CN;
  // Several CNs come as an array: ambiguous, so no identity.
  return typeof cn === 'string' && cn !== '' ? cn : undefined;
}

/**
 * One pool for every connection: a client's buffers serve the next one. Its free buffers are
 * memory held on top of the per-connection bounds, so it stays small.
 */
const readBuffers = new ReadBuffers(16 << 20);

/** How long a closing connection waits for the client to close its side. */
const LINGER_MS = 2000;

type Phase = 'negotiating' | 'tls' | 'transmission' | 'draining' | 'closed';

export class NbdConnection<E extends DeviceExport> {
  /** The host id the client proved over TLS (PSK identity or certificate CN); null without TLS. */
  identity: string | null = null;
  /** The export in use, once in transmission. */
  export: E | undefined;
  /** Settles when the socket is gone. */
  readonly closed: Promise<void>;

  private stream: Socket;
  private phase: Phase = 'negotiating';
  /** Ends a negotiation that has not reached transmission in time; set at accept, never moved. */
  private deadline: NodeJS.Timeout | undefined;
  private parser: RequestParser | undefined;
  private context: TransmissionContext | undefined;
  private inFlight = 0;
  private inFlightBytes = 0;
  private log: Logger | undefined;
  private resolveClosed: () => void = () => undefined;
  /** Bytes that arrived over TLS before we saw the handshake finish; negotiated right after. */
  private early: Buffer[] = [];
  private gone = false;

  constructor(
    socket: Socket,
    private readonly handshake: Handshake<E>,
    private readonly tls: TlsSetup | undefined,
    private readonly limits: ConnectionLimits,
    private readonly admit: AdmitHost,
    logger: Logger | undefined,
    /** The server's totals: this connection's bytes and errors are added to them. */
    private readonly stats?: NbdStats,
  ) {
    this.stream = socket;
    this.log = logger;
    socket.setNoDelay(true); // the spec asks for it: replies are latency-bound
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.attach(socket);
    this.deadline = setTimeout(() => this.destroy('negotiation timed out'), limits.negotiationTimeoutMs);
    this.write([handshake.greeting()]);
  }

  /**
   * Graceful stop: a negotiating client is dropped; one in transmission gets no new request
   * read, and the connection ends once the requests already read are answered.
   */
  drain(): void {
    if (this.phase === 'transmission') {
      this.phase = 'draining';
      this.stream.pause();
      this.endIfIdle();
    } else if (this.phase !== 'draining') {
      this.destroy('server stopping');
    }
  }

  /** Hard disconnect, at once. */
  destroy(reason: string): void {
    if (this.phase !== 'closed') this.log?.debug({ reason }, 'nbd connection closed');
    this.phase = 'closed';
    clearTimeout(this.deadline);
    this.stream.destroy();
  }

  private attach(stream: Socket): void {
    stream.on('data', this.onData);
    stream.on('error', (err) => this.destroy(err.message));
    stream.once('close', () => this.onClose());
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.phase === 'negotiating') this.negotiate(chunk);
    else if (this.phase === 'tls') this.early.push(chunk);
    else if (this.phase === 'transmission') {
      this.parser?.push(chunk);
      this.pump();
    }
    // While draining, a client's further requests go unread; the connection is about to end.
  };

  private negotiate(chunk: Buffer): void {
    let out;
    try {
      out = this.handshake.receive(chunk);
    } catch (e) {
      if (!(e instanceof NbdProtocolError)) this.log?.error({ err: e }, 'nbd handshake failed');
      else if (this.stats) this.stats.protocolErrors++;
      this.destroy(e instanceof Error ? e.message : String(e));
      return;
    }
    this.write(out.send);
    const next = out.next;
    switch (next.kind) {
      case 'continue':
        return;
      case 'close':
        this.log?.debug({ reason: next.reason }, 'nbd negotiation ended');
        this.closeGracefully();
        return;
      case 'starttls':
        this.startTls();
        return;
      case 'transmission':
        this.enterTransmission(next.negotiated, next.rest);
        return;
    }
  }

  private startTls(): void {
    const tls = this.tls;
    if (tls === undefined) return this.destroy('STARTTLS accepted without TLS set up');
    const raw = this.stream;
    raw.removeListener('data', this.onData);
    this.phase = 'tls';
    let identity: string | undefined;
    let usedKey: Buffer | undefined;
    const options: TlsOptions & { isServer: true } =
      tls.mode === 'psk'
        ? {
            isServer: true,
            secureContext: tls.secureContext,
            pskCallback: (_socket, id) => {
              const key = tls.keys(id);
              if (key === undefined) this.log?.info({ identity: id }, 'nbd client offered an unknown PSK identity');
              identity = id;
              usedKey = key;
              return key ?? null;
            },
          }
        : // A client without a certificate of our CA fails in the handshake itself.
          { isServer: true, secureContext: tls.secureContext, requestCert: true, rejectUnauthorized: true };
    const secure = new TLSSocket(raw, options);
    this.stream = secure;
    this.attach(secure);
    secure.once('secure', () => {
      if (tls.mode === 'x509') identity = certificateIdentity(secure, tls.clientCas);
      if (identity === undefined || this.phase !== 'tls') return this.destroy('TLS up without a host identity');
      // The host's key may have changed while TLS was under way; a session must not outlive
      // the key it was opened with (key changes cut the host's sessions by identity, which a
      // connection only has from here on).
      if (tls.mode === 'psk' && !(usedKey !== undefined && tls.keys(identity)?.equals(usedKey) === true)) return this.destroy('host key changed during the TLS handshake');
      if (!this.admit(identity)) return this.destroy('too many connections for this host');
      this.identity = identity;
      this.log = this.log?.child({ hostId: identity });
      this.log?.debug({ protocol: secure.getProtocol(), cipher: secure.getCipher().name }, 'nbd TLS up');
      this.handshake.tlsEstablished(identity);
      this.phase = 'negotiating';
      for (const chunk of this.early.splice(0)) if (this.phase === 'negotiating') this.negotiate(chunk);
    });
  }

  private enterTransmission(negotiated: Negotiated<E>, rest: Buffer): void {
    clearTimeout(this.deadline);
    this.deadline = undefined;
    this.phase = 'transmission';
    this.export = negotiated.export;
    this.log = this.log?.child({ export: negotiated.export.name });
    this.log?.info({ structuredReplies: negotiated.structuredReplies }, 'nbd client attached');
    this.parser = new RequestParser(this.limits.maxRequestLength);
    this.context = {
      device: negotiated.export.device,
      readOnly: negotiated.export.readOnly,
      structuredReplies: negotiated.structuredReplies,
      allocationContextId: negotiated.allocationContextId,
      maxRequestLength: this.limits.maxRequestLength,
      onStorageError: (err, req) => this.log?.warn({ err, command: req.type, offset: req.offset, length: req.length }, 'nbd storage error'),
      readBuffers,
      ...(this.stats && { stats: this.stats }),
    };
    this.parser.push(rest);
    this.pump();
  }

  /** Starts every whole request received, as far as the in-flight limits allow. */
  private pump(): void {
    const parser = this.parser;
    const context = this.context;
    if (parser === undefined || context === undefined) return;
    while (this.phase === 'transmission' && this.inFlight < this.limits.maxInFlight && this.inFlightBytes < this.limits.maxInFlightBytes) {
      let req: NbdRequest | undefined;
      try {
        req = parser.next();
      } catch (e) {
        if (this.stats) this.stats.protocolErrors++;
        this.destroy(e instanceof Error ? e.message : String(e));
        return;
      }
      if (req === undefined) break;
      if (req.type === NBD_CMD.DISC) {
        // The client sends nothing after DISC; answer what is running, then close.
        this.phase = 'draining';
        this.endIfIdle();
        return;
      }
      void this.run(req, context);
    }
    if (this.phase !== 'transmission') return;
    const full = this.inFlight >= this.limits.maxInFlight || this.inFlightBytes >= this.limits.maxInFlightBytes;
    if (full) this.stream.pause();
    else this.stream.resume();
  }

  private async run(req: NbdRequest, context: TransmissionContext): Promise<void> {
    const bytes = req.type === NBD_CMD.READ || req.type === NBD_CMD.WRITE ? req.length : 0;
    this.inFlight++;
    this.inFlightBytes += bytes;
    const reply = await execute(req, context);
    // A request stays in flight until its reply has left for the kernel, so a client that does
    // not read its replies stops being read from instead of filling our memory.
    this.write(reply, () => {
      // The reply has left for the kernel (or the socket is gone): its data buffer is free.
      for (const b of reply) readBuffers.give(b);
      this.inFlight--;
      this.inFlightBytes -= bytes;
      if (this.phase === 'draining') this.endIfIdle();
      else this.pump();
    });
  }

  /** Writes one message (or one reply) whole: nothing can come between its parts. */
  private write(buffers: readonly Buffer[], done?: () => void): void {
    if (this.phase === 'closed' || this.stream.destroyed) {
      done?.();
      return;
    }
    this.stream.cork();
    buffers.forEach((b, i) => this.stream.write(b, i === buffers.length - 1 ? () => done?.() : undefined));
    if (buffers.length === 0) done?.();
    this.stream.uncork();
  }

  private endIfIdle(): void {
    if (this.inFlight === 0 && this.phase !== 'closed') this.closeGracefully();
  }

  /**
   * Sends what is queued (and TLS close_notify), then closes. The client normally closes its
   * side at once; one that does not is cut off shortly after, so stop() never waits on it.
   */
  private closeGracefully(): void {
    this.phase = 'closed';
    clearTimeout(this.deadline);
    this.stream.end();
    setTimeout(() => this.stream.destroy(), LINGER_MS).unref();
  }

  private onClose(): void {
    if (this.gone) return; // after STARTTLS both sockets report it
    this.gone = true;
    if (this.export !== undefined) this.log?.info('nbd client detached');
    this.phase = 'closed';
    clearTimeout(this.deadline);
    this.resolveClosed();
  }
}
