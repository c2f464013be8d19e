import type { BlockDevice, BlockExtent } from '../domain/index.js';

/**
 * A block device that opens in the background: an export is served at once (its size is the
 * image's, known without opening) and its first request waits for the open. A provision then
 * answers in the time of a claim whatever opening the volume costs (an RBD clone opens its
 * parent too: tens of milliseconds), and the open overlaps the host's own connect.
 *
 * A failed open is reported and tried again by the next request, which fails meanwhile (the
 * NBD client sees EIO, not a wrong disk); a volume whose size is not the expected one is refused.
 */
export class BackgroundDevice implements BlockDevice {
  private opening: Promise<BlockDevice> | undefined;
  private device: BlockDevice | undefined;
  private closed = false;

  constructor(
    readonly size: number,
    private readonly open: () => Promise<BlockDevice>,
    private readonly onError: (err: unknown) => void,
  ) {
    void this.start().catch(() => undefined);
  }

  private start(): Promise<BlockDevice> {
    const opening = this.open().then(async (device) => {
      if (device.size !== this.size) {
        await device.close().catch(() => undefined);
        throw new Error(`the volume holds ${device.size} bytes, not the ${this.size} of its image`);
      }
      if (this.closed) {
        await device.close();
        throw new Error('the device was closed while it opened');
      }
      this.device = device;
      return device;
    });
    this.opening = opening;
    opening.catch((err: unknown) => {
      if (this.opening === opening) this.opening = undefined;
      if (!this.closed) this.onError(err);
    });
    return opening;
  }

  private ready(): BlockDevice | Promise<BlockDevice> {
    if (this.closed) throw new Error('the device is closed');
    return this.device ?? this.opening ?? this.start();
  }

  async read(into: Buffer, offset: number): Promise<void> {
    return (this.device ?? (await this.ready())).read(into, offset);
  }

  async write(data: Buffer, offset: number): Promise<void> {
    return (this.device ?? (await this.ready())).write(data, offset);
  }

  async flush(): Promise<void> {
    return (this.device ?? (await this.ready())).flush();
  }

  async trim(offset: number, length: number): Promise<void> {
    return (this.device ?? (await this.ready())).trim(offset, length);
  }

  async zero(offset: number, length: number, mayPunch: boolean): Promise<void> {
    return (this.device ?? (await this.ready())).zero(offset, length, mayPunch);
  }

  async extents(offset: number, length: number, max: number): Promise<BlockExtent[]> {
    return (this.device ?? (await this.ready())).extents(offset, length, max);
  }

  /** Waits for an open under way, then closes what it opened. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const device = this.device ?? (await this.opening?.catch(() => undefined));
    this.device = undefined;
    await device?.close();
  }
}
