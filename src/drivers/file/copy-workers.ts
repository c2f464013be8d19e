/**
 * A small pool of long-lived copy worker threads. Jobs queue FIFO while every worker is busy;
 * a worker that dies takes only its current job down with it and is replaced by a fresh one.
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { PrestageError, UnavailableError, type ProgressListener } from '../../domain/index.js';
import type { CopyRateShare } from './copy-rate.js';
import type { Job, JobMessage, JobResults, WorkerMessage } from './jobs.js';

/** A job a worker reported as failed; `code` is an errno code ('ENOSPC') or 'EVERIFY'. */
export class WorkerJobError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = 'WorkerJobError';
  }
}

export interface CopyWorkersOptions {
  /** How many worker threads at most (default 2). */
  readonly size?: number;
  /** The worker's module; tests swap in their own. Default: ./copy-worker.ts next to this file. */
  readonly workerUrl?: URL;
  readonly logger?: Logger;
  /** A cap on the bytes per second all workers together move for copies; absent: none. */
  readonly copyRate?: CopyRateShare;
}

interface Pending {
  readonly id: number;
  readonly job: Job;
  readonly onProgress: ProgressListener | undefined;
  readonly resolve: (result: unknown) => void;
  readonly reject: (err: Error) => void;
}

interface Slot {
  readonly worker: Worker;
  current: Pending | undefined;
  /** Settles once the worker has loaded its modules, or has exited. */
  readonly started: Promise<void>;
}

/** How long close() waits for a worker still loading before it terminates it anyway. */
const START_WAIT_MS = 10_000;

/** A `--import`/`--loader`/`--require` argument that loads tsx (the bootstrap registers tsx itself). */
function isTsx(spec: string | undefined): boolean {
  return spec !== undefined && (spec === 'tsx' || spec.startsWith('tsx/') || spec.includes('/node_modules/tsx/'));
}

/** The parent's Node options minus its tsx hooks, which the worker bootstrap replaces. */
function workerExecArgv(): string[] {
  const argv = process.execArgv;
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (['--import', '--loader', '--experimental-loader', '--require', '-r'].includes(arg) && isTsx(argv[i + 1])) {
      i++;
      continue;
    }
    const inline = /^--(?:import|loader|experimental-loader|require)=(.*)$/.exec(arg);
    if (inline && isTsx(inline[1])) continue;
    out.push(arg);
  }
  return out;
}

/**
 * Starts a worker on `url`. A TypeScript worker cannot rely on `--import tsx` in its execArgv: on
 * Node 20 tsx registers its hooks on the main thread only, and hooks are not inherited by workers.
 * So a tiny eval'd bootstrap registers tsx inside the worker through its API, then imports the
 * worker module. This works whether the process started with `node --import tsx` or registered
 * tsx from a bin script via `tsx/esm/api`.
 */
function startWorker(url: URL, workerData: unknown): Worker {
  const execArgv = workerExecArgv();
  if (!url.pathname.endsWith('.ts')) return new Worker(url, { execArgv, workerData });
  const api = import.meta.resolve('tsx/esm/api');
  const bootstrap = `import(${JSON.stringify(api)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(url.href)}); });`;
  return new Worker(bootstrap, { eval: true, execArgv, workerData });
}

export class CopyWorkers {
  private readonly size: number;
  private readonly workerUrl: URL;
  private readonly logger: Logger | undefined;
  private readonly workerData: { readonly copyRate?: CopyRateShare };
  private readonly slots: Slot[] = [];
  private readonly queue: Pending[] = [];
  private nextId = 1;
  private closed = false;

  constructor(opts: CopyWorkersOptions = {}) {
    this.size = Math.max(1, opts.size ?? 2);
    // The worker sits next to this module: .ts under tsx (tests), .js when compiled (dist/).
    this.workerUrl = opts.workerUrl ?? new URL(`./copy-worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url);
    this.logger = opts.logger;
    this.workerData = opts.copyRate ? { copyRate: opts.copyRate } : {};
    // Start them now so the first copy does not pay the worker start-up (~0.3 s with tsx).
    while (this.slots.length < this.size) this.spawn();
  }

  /** Runs a job on the next free worker; progress is reported while it runs. */
  run<J extends Job>(job: J, onProgress?: ProgressListener): Promise<JobResults[J['kind']]> {
    if (this.closed) return Promise.reject(new UnavailableError('copy workers are closed'));
    return new Promise<JobResults[J['kind']]>((resolve, reject) => {
      this.queue.push({ id: this.nextId++, job, onProgress, resolve: resolve as (r: unknown) => void, reject });
      this.dispatch();
    });
  }

  /** Stops every worker; queued and running jobs are rejected. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.queue.splice(0)) p.reject(new UnavailableError('copy workers closed'));
    // A worker terminated while it loads its native module (koffi) aborts the whole process, so
    // one still starting is let finish first.
    await Promise.all(
      this.slots.map(async (s) => {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([s.started, new Promise((r) => (timer = setTimeout(r, START_WAIT_MS)))]);
        clearTimeout(timer);
        await s.worker.terminate();
      }),
    );
  }

  private dispatch(): void {
    while (!this.closed && this.queue.length > 0) {
      let slot = this.slots.find((s) => s.current === undefined);
      if (!slot) {
        if (this.slots.length >= this.size) return;
        slot = this.spawn();
      }
      const pending = this.queue.shift()!;
      slot.current = pending;
      slot.worker.ref(); // a running job keeps the process alive; an idle worker does not
      slot.worker.postMessage({ id: pending.id, job: pending.job } satisfies JobMessage);
    }
  }

  private spawn(): Slot {
    const worker = startWorker(this.workerUrl, this.workerData);
    let markStarted!: () => void;
    const slot: Slot = { worker, current: undefined, started: new Promise<void>((r) => (markStarted = r)) };
    this.slots.push(slot);
    worker.unref();
    let crash: Error | undefined;

    const finish = (): Pending | undefined => {
      const p = slot.current;
      slot.current = undefined;
      worker.unref();
      return p;
    };
    worker.on('message', (msg: WorkerMessage) => {
      if (msg.type === 'ready') return markStarted();
      const p = slot.current;
      if (!p || p.id !== msg.id) return;
      switch (msg.type) {
        case 'progress':
          try {
            p.onProgress?.({ doneBytes: msg.doneBytes, totalBytes: msg.totalBytes });
          } catch (e) {
            this.logger?.warn({ err: e }, 'copy progress listener threw');
          }
          return;
        case 'done':
          finish()?.resolve(msg.result);
          break;
        case 'error':
          finish()?.reject(new WorkerJobError(msg.code, msg.message));
          break;
      }
      this.dispatch();
    });
    // An uncaught error inside the worker: 'exit' follows, which does the clean-up.
    worker.on('error', (err) => {
      crash = err;
    });
    worker.on('exit', (code) => {
      markStarted();
      this.slots.splice(this.slots.indexOf(slot), 1);
      const p = finish();
      if (this.closed) {
        p?.reject(new UnavailableError('copy workers closed'));
        return;
      }
      const why = crash ? crash.message : `exit code ${code}`;
      this.logger?.error({ err: crash, code }, 'copy worker died');
      p?.reject(new PrestageError('PRESTAGE_INTERNAL', `copy worker died: ${why}`, { exitCode: code }, { cause: crash }));
      // Replaced on demand: dispatch() starts a fresh worker when a job needs one. Never respawn
      // straight away, or a worker that cannot start would loop forever.
      this.dispatch();
    });
    return slot;
  }
}
