/**
 * Fixed newstyle negotiation as a state machine: bytes in, what to send and what to do next out.
 * It never touches a socket, so every path (TLS required or not, allowed or forbidden exports,
 * malformed options) is tested by feeding it bytes.
 *
 * What a client may see is decided by two callbacks: `authorize(identity, name)` returns the
 * export or undefined, and `list(identity)` returns what NBD_OPT_LIST may show. A forbidden
 * export is answered exactly like one that does not exist, so names cannot be probed.
 */
import {
  BASE_ALLOCATION,
  NBD_FLAG,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_INFO,
  NBD_OPT,
  NBD_REP,
  NbdProtocolError,
  OptionParser,
  decodeString,
  exportNameReply,
  infoBlockSize,
  infoDescription,
  infoExport,
  infoName,
  metaContext,
  optionError,
  optionReply,
  parseInfoRequest,
  parseMetaContextRequest,
  serverEntry,
  serverGreeting,
} from './protocol.js';

/** What the negotiation needs to know about an export. */
export interface NbdExportInfo {
  readonly name: string;
  readonly size: number;
  readonly readOnly: boolean;
  readonly description?: string;
}

export interface BlockSizes {
  readonly min: number;
  readonly preferred: number;
  readonly max: number;
}

export interface HandshakeConfig<E extends NbdExportInfo> {
  /**
   * FORCEDTLS: every option but STARTTLS and ABORT is refused until TLS is up. Otherwise NOTLS:
   * STARTTLS is refused with NBD_REP_ERR_POLICY.
   */
  readonly tlsRequired: boolean;
  readonly maxOptionLength: number;
  /**
   * Options answered before TLS is up (with `tlsRequired`); the next one gets an error and the
   * connection closes. Before TLS a client is anonymous and only STARTTLS is of use to it.
   */
  readonly maxOptionsBeforeTls: number;
  /**
   * Options answered in one negotiation, those before TLS included. Each gets a reply the client
   * may never read, so without this bound a client could grow our write buffer without limit.
   */
  readonly maxOptions: number;
  readonly blockSizes: BlockSizes;
  /** The export `name` if `identity` (the TLS-PSK identity, null without TLS) may use it. */
  authorize(identity: string | null, name: string): E | undefined;
  /** The exports `identity` may see in NBD_OPT_LIST. */
  list(identity: string | null): readonly E[];
}

/** What was agreed for the transmission phase. */
export interface Negotiated<E extends NbdExportInfo> {
  readonly export: E;
  readonly identity: string | null;
  readonly transmissionFlags: number;
  readonly structuredReplies: boolean;
  /** The id given to `base:allocation`, when it was selected for this export; else no BLOCK_STATUS. */
  readonly allocationContextId: number | undefined;
}

export type HandshakeNext<E extends NbdExportInfo> =
  /** Send, then wait for more bytes. */
  | { readonly kind: 'continue' }
  /** Send, then run the TLS handshake on the socket and call `tlsEstablished`. */
  | { readonly kind: 'starttls' }
  /** Send, then close the connection (after NBD_OPT_ABORT, or where the spec mandates it). */
  | { readonly kind: 'close'; readonly reason: string }
  /** Send, then enter transmission; `rest` holds bytes that already belong to it. */
  | { readonly kind: 'transmission'; readonly negotiated: Negotiated<E>; readonly rest: Buffer };

export interface HandshakeOutput<E extends NbdExportInfo> {
  readonly send: readonly Buffer[];
  readonly next: HandshakeNext<E>;
}

/** The id we give `base:allocation`; any value works, ids are opaque to clients. */
export const ALLOCATION_CONTEXT_ID = 1;

type Phase = 'flags' | 'options' | 'tls-pending' | 'done';

export class Handshake<E extends NbdExportInfo> {
  private readonly parser: OptionParser;
  private phase: Phase = 'flags';
  private noZeroes = false;
  private tls = false;
  private identity: string | null = null;
  private structuredReplies = false;
  /** The export named in the last NBD_OPT_SET_META_CONTEXT, when it selected base:allocation. */
  private allocationFor: string | undefined;
  private options = 0;
  private optionsBeforeTls = 0;

  constructor(private readonly config: HandshakeConfig<E>) {
    this.parser = new OptionParser(config.maxOptionLength);
  }

  /** The server's first bytes. */
  greeting(): Buffer {
    return serverGreeting();
  }

  /**
   * Feeds client bytes. Throws NbdProtocolError on bytes that cannot be negotiation (the caller
   * drops the connection); everything a client may legally get wrong gets an error reply instead.
   */
  receive(chunk: Buffer): HandshakeOutput<E> {
    if (this.phase === 'done' || this.phase === 'tls-pending') throw new NbdProtocolError(`unexpected bytes after the negotiation ${this.phase === 'done' ? 'ended' : 'switched to TLS'}`);
    this.parser.push(chunk);
    const send: Buffer[] = [];
    for (let msg = this.parser.next(); msg !== undefined; msg = this.parser.next()) {
      const next = msg.kind === 'flags' ? this.onFlags(msg.flags) : this.onOption(msg.option, msg.data, send);
      if (next.kind === 'continue') continue;
      if (next.kind === 'transmission') return { send, next: { ...next, rest: this.parser.rest() } };
      this.phase = next.kind === 'starttls' ? 'tls-pending' : 'done';
      // The client must wait for our ACK before starting TLS: bytes already here are a violation.
      if (next.kind === 'starttls' && this.parser.rest().length > 0) throw new NbdProtocolError('data sent after NBD_OPT_STARTTLS before its reply');
      return { send, next };
    }
    return { send, next: { kind: 'continue' } };
  }

  /** TLS is up; `identity` is the PSK identity the client proved it holds the key for. */
  tlsEstablished(identity: string): void {
    if (this.phase !== 'tls-pending') throw new Error('tlsEstablished() without a pending STARTTLS');
    this.phase = 'options';
    this.tls = true;
    this.identity = identity;
  }

  private onFlags(flags: number): HandshakeNext<E> {
    this.phase = 'options';
    if ((flags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) !== 0) return { kind: 'close', reason: `unknown client flags 0x${flags.toString(16)}` };
    // TLS needs fixed newstyle; a server that insists on TLS cannot serve a client without it.
    if (this.config.tlsRequired && (flags & NBD_FLAG_C_FIXED_NEWSTYLE) === 0) return { kind: 'close', reason: 'client cannot negotiate TLS (no fixed newstyle)' };
    this.noZeroes = (flags & NBD_FLAG_C_NO_ZEROES) !== 0;
    return { kind: 'continue' };
  }

  private onOption(option: number, data: Buffer, send: Buffer[]): HandshakeNext<E> {
    const continueWith = (...replies: Buffer[]): HandshakeNext<E> => {
      send.push(...replies);
      return { kind: 'continue' };
    };
    const anonymous = this.config.tlsRequired && !this.tls;
    this.options++;
    if (anonymous) this.optionsBeforeTls++;
    if (this.options > this.config.maxOptions || (anonymous && this.optionsBeforeTls > this.config.maxOptionsBeforeTls)) {
      send.push(optionError(option, NBD_REP.ERR_POLICY, 'too many options'));
      return { kind: 'close', reason: `too many options (${this.options}${anonymous ? ' before TLS' : ''})` };
    }
    if (anonymous) {
      switch (option) {
        case NBD_OPT.STARTTLS:
          break;
        case NBD_OPT.ABORT:
          send.push(optionReply(option, NBD_REP.ACK));
          return { kind: 'close', reason: 'client aborted' };
        case NBD_OPT.EXPORT_NAME:
          return { kind: 'close', reason: 'NBD_OPT_EXPORT_NAME before TLS' };
        default:
          return continueWith(optionError(option, NBD_REP.ERR_TLS_REQD, 'TLS is required: send NBD_OPT_STARTTLS first'));
      }
    }
    switch (option) {
      case NBD_OPT.STARTTLS:
        if (!this.config.tlsRequired) return continueWith(optionError(option, NBD_REP.ERR_POLICY, 'TLS is not enabled on this server'));
        if (this.tls) return continueWith(optionError(option, NBD_REP.ERR_INVALID, 'TLS is already active'));
        if (data.length !== 0) return continueWith(optionError(option, NBD_REP.ERR_INVALID, 'NBD_OPT_STARTTLS takes no data'));
        send.push(optionReply(option, NBD_REP.ACK));
        // The spec: no negotiation state survives STARTTLS.
        this.structuredReplies = false;
        this.allocationFor = undefined;
        return { kind: 'starttls' };
      case NBD_OPT.ABORT:
        send.push(optionReply(option, NBD_REP.ACK));
        return { kind: 'close', reason: 'client aborted' };
      case NBD_OPT.LIST:
        if (data.length !== 0) return continueWith(optionError(option, NBD_REP.ERR_INVALID, 'NBD_OPT_LIST takes no data'));
        return continueWith(...this.config.list(this.identity).map((e) => serverEntry(option, e.name, e.description)), optionReply(option, NBD_REP.ACK));
      case NBD_OPT.EXPORT_NAME:
        return this.exportName(data, send);
      case NBD_OPT.INFO:
      case NBD_OPT.GO:
        return this.infoOrGo(option, data, send);
      case NBD_OPT.STRUCTURED_REPLY:
        if (data.length !== 0) return continueWith(optionError(option, NBD_REP.ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data'));
        this.structuredReplies = true;
        return continueWith(optionReply(option, NBD_REP.ACK));
      case NBD_OPT.LIST_META_CONTEXT:
      case NBD_OPT.SET_META_CONTEXT:
        return continueWith(...this.metaContexts(option, data));
      default:
        return continueWith(optionError(option, NBD_REP.ERR_UNSUP, `option ${option} is not supported`));
    }
  }

  /** NBD_OPT_EXPORT_NAME cannot carry an error: a name we cannot serve ends the session. */
  private exportName(data: Buffer, send: Buffer[]): HandshakeNext<E> {
    const name = decodeString(data);
    const exp = name === undefined ? undefined : this.config.authorize(this.identity, name);
    if (name === undefined || exp === undefined) return { kind: 'close', reason: 'NBD_OPT_EXPORT_NAME for an unknown or forbidden export' };
    const negotiated = this.negotiated(exp, name);
    send.push(exportNameReply(exp.size, negotiated.transmissionFlags, this.noZeroes));
    this.phase = 'done';
    return { kind: 'transmission', negotiated, rest: Buffer.alloc(0) };
  }

  private infoOrGo(option: number, data: Buffer, send: Buffer[]): HandshakeNext<E> {
    const request = parseInfoRequest(data);
    if (request === undefined) {
      send.push(optionError(option, NBD_REP.ERR_INVALID, 'malformed information request'));
      return { kind: 'continue' };
    }
    const exp = this.config.authorize(this.identity, request.name);
    if (exp === undefined) {
      send.push(optionError(option, NBD_REP.ERR_UNKNOWN, 'no such export'));
      return { kind: 'continue' };
    }
    const negotiated = this.negotiated(exp, request.name);
    send.push(infoExport(option, exp.size, negotiated.transmissionFlags));
    if (request.requests.includes(NBD_INFO.NAME)) send.push(infoName(option, exp.name));
    if (request.requests.includes(NBD_INFO.DESCRIPTION) && exp.description !== undefined) send.push(infoDescription(option, exp.description));
    // Sent whether asked or not: our maximum is not the default "unlimited", so clients that
    // understand it should know; those that do not must ignore it.
    const { min, preferred, max } = this.config.blockSizes;
    send.push(infoBlockSize(option, min, preferred, max));
    send.push(optionReply(option, NBD_REP.ACK));
    if (option === NBD_OPT.INFO) return { kind: 'continue' };
    this.phase = 'done';
    return { kind: 'transmission', negotiated, rest: Buffer.alloc(0) };
  }

  private metaContexts(option: number, data: Buffer): Buffer[] {
    const setting = option === NBD_OPT.SET_META_CONTEXT;
    // SET replaces the selection even when it fails.
    if (setting) this.allocationFor = undefined;
    if (!this.structuredReplies) return [optionError(option, NBD_REP.ERR_INVALID, 'negotiate structured replies first')];
    const request = parseMetaContextRequest(data);
    if (request === undefined || request.queries.some((q) => !q.includes(':'))) return [optionError(option, NBD_REP.ERR_INVALID, 'malformed metadata context request')];
    if (this.config.authorize(this.identity, request.exportName) === undefined) return [optionError(option, NBD_REP.ERR_UNKNOWN, 'no such export')];
    // Queries in unknown namespaces and unknown base: leaves are ignored, as the spec requires.
    // `base:` is a wildcard when listing and selects nothing when setting.
    const matches = setting
      ? request.queries.includes(BASE_ALLOCATION)
      : request.queries.length === 0 || request.queries.some((q) => q === BASE_ALLOCATION || q === 'base:');
    if (!matches) return [optionReply(option, NBD_REP.ACK)];
    if (setting) this.allocationFor = request.exportName;
    return [metaContext(option, setting ? ALLOCATION_CONTEXT_ID : 0, BASE_ALLOCATION), optionReply(option, NBD_REP.ACK)];
  }

  private negotiated(exp: E, requestedName: string): Negotiated<E> {
    return {
      export: exp,
      identity: this.identity,
      transmissionFlags: transmissionFlags(exp.readOnly, this.structuredReplies),
      structuredReplies: this.structuredReplies,
      allocationContextId: this.structuredReplies && this.allocationFor === requestedName ? ALLOCATION_CONTEXT_ID : undefined,
    };
  }
}

/**
 * What we offer. CAN_MULTI_CONN is safe because every connection to an export shares one open
 * file, and FLUSH / FUA fdatasync that file, so their effect is visible to all connections.
 */
export function transmissionFlags(readOnly: boolean, structuredReplies: boolean): number {
  let flags = NBD_FLAG.HAS_FLAGS | NBD_FLAG.SEND_FLUSH | NBD_FLAG.CAN_MULTI_CONN;
  flags |= readOnly ? NBD_FLAG.READ_ONLY : NBD_FLAG.SEND_FUA | NBD_FLAG.SEND_TRIM | NBD_FLAG.SEND_WRITE_ZEROES;
  // Every READ reply is one chunk anyway, so "don't fragment" costs nothing to honour.
  if (structuredReplies) flags |= NBD_FLAG.SEND_DF;
  return flags;
}
