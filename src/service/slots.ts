/**
 * A counting semaphore with a FIFO queue: at most `size` tasks run at once, and the rest start
 * in the order they asked. A freed slot passes straight to the next waiter, so a newcomer never
 * overtakes the queue.
 */
export class Slots {
  private inUse = 0;
  private readonly queue: (() => void)[] = [];

  constructor(readonly size: number) {
    if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`slots: size must be a whole number ≥ 1, got ${size}`);
  }

  /** Tasks holding a slot now. */
  get running(): number {
    return this.inUse;
  }

  /** Tasks waiting for one. */
  get waiting(): number {
    return this.queue.length;
  }

  /** Runs `task` once a slot is free and frees it when the task settles, whatever the outcome. */
  async run<T>(task: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await task();
    } finally {
      this.release();
    }
  }

  private acquire(): Promise<void> {
    if (this.inUse < this.size) {
      this.inUse++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.queue.push(resolve));
  }

  private release(): void {
    const next = this.queue.shift();
    // The slot goes to the next waiter as it is: the count stays.
    if (next) next();
    else this.inUse--;
  }
}
