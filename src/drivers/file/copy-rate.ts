/**
 * A cap on the bytes per second that copies move, shared by every copy worker thread, so that
 * making spares never takes all of the disk from the hosts already running on it.
 *
 * One virtual clock in shared memory: a worker about to move `n` bytes reserves the next `n / rate`
 * seconds of it with a compare-and-swap and sleeps until its reservation starts. Reservations never
 * overlap, so over any interval the workers together move at most `rate × interval + one chunk`.
 * The clock never runs ahead of real time by more than what is reserved, so an idle period does not
 * bank credit for a burst later.
 */

/** What the main thread hands each worker (structured-clone safe: the buffer is shared, not copied). */
export interface CopyRateShare {
  readonly buffer: SharedArrayBuffer;
  readonly bytesPerSec: number;
}

/** Layout: [0] next free instant (µs since the epoch, BigInt64); bytes 8–11 an Int32 to sleep on. */
export function createCopyRateShare(bytesPerSec: number): CopyRateShare {
  if (!(bytesPerSec > 0) || !Number.isFinite(bytesPerSec)) throw new RangeError(`copy rate must be a positive number of bytes per second, got ${bytesPerSec}`);
  return { buffer: new SharedArrayBuffer(16), bytesPerSec };
}

function nowMicros(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
}

export class CopyRateLimit {
  private readonly clock: BigInt64Array;
  private readonly sleeper: Int32Array;

  constructor(private readonly share: CopyRateShare) {
    this.clock = new BigInt64Array(share.buffer, 0, 1);
    this.sleeper = new Int32Array(share.buffer, 8, 1);
  }

  /** Blocks this thread (a worker's, never the main one) until `bytes` may be moved. */
  take(bytes: number): void {
    if (bytes <= 0) return;
    const cost = BigInt(Math.ceil((bytes / this.share.bytesPerSec) * 1e6));
    let start: bigint;
    for (;;) {
      const seen = Atomics.load(this.clock, 0);
      const now = nowMicros();
      start = seen > now ? seen : now;
      if (Atomics.compareExchange(this.clock, 0, seen, start + cost) === seen) break;
    }
    for (let wait = start - nowMicros(); wait > 0n; wait = start - nowMicros()) {
      // Nobody notifies: this is a plain sleep that a worker thread is allowed to do.
      Atomics.wait(this.sleeper, 0, 0, Math.ceil(Number(wait) / 1000));
    }
  }
}
