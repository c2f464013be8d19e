/**
 * `prestage simulate` for the dashboard: one comparison of policies on a bundled trace or on a
 * trace the caller sends, bounded so that a reader cannot tie the server up with it. Each run
 * gets a worker thread of its own (the replay is CPU-bound), one run at a time, stopped when it
 * passes its time limit.
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { InputError, PrestageError, UnavailableError, type ErrorCode } from '../domain/index.js';
import { parseBudget, type Budget } from '../pool/policy/index.js';
import type { Comparison, CompareOptions } from '../pool/simulator/index.js';

/** The traces shipped in data/traces/ that a caller may name. */
export const BUNDLED_TRACES = {
  'azure-v1': {
    file: 'azure-v1/v1.dev.txt',
    train: 'azure-v1/v1.train.txt',
    title: 'Azure VM creations, 3.5 days scored after 21 days learned',
    attribution: 'Azure Public Dataset V1, CC-BY-4.0',
  },
} as const;
export type BundledTrace = keyof typeof BUNDLED_TRACES;

/** The bounds of one run; the API documents them in its schema. */
export const SIMULATION_LIMITS = {
  /** Policies compared in one run. */
  policies: 4,
  /** Pools (the busiest sources). */
  pools: 10,
  /** Characters of a trace sent in the request (the JSON body limit is 1 MiB). */
  traceChars: 1_000_000,
  /** Points per plotted line. */
  points: 400,
  /** Wall-clock time of one run before it is stopped. */
  timeMs: 60_000,
  /** Runs waiting for the one in progress. */
  queued: 2,
} as const;

export interface SimulationRequest {
  readonly bundled?: BundledTrace;
  /** A trace's text, CSV (`time_s,source[,count]`) or the Azure V1 format. */
  readonly text?: string;
  /** The sent trace's file name, for messages. */
  readonly name?: string;
  /** With a bundled trace that has one: learn on its training part first. Default true. */
  readonly learn?: boolean;
  readonly policies: readonly string[];
  readonly top?: number;
  readonly hours?: number;
  readonly leadTimeS?: number;
  readonly concurrency?: number;
  /** Copies (`800`) or bytes (`500GiB`) of all spares together. */
  readonly budget?: string;
}

export interface SimulationReply extends Comparison {
  /** Whose data it is, to be shown with the results (the Azure trace's licence asks for it). */
  readonly attribution: string | null;
  readonly learnedOn: string | null;
}

/** What the worker is given: everything decided and checked already. */
export interface WorkerJob {
  readonly trace: { readonly kind: 'file'; readonly path: string; readonly name: string } | { readonly kind: 'text'; readonly text: string; readonly name: string };
  readonly train: { readonly path: string; readonly name: string } | null;
  readonly seed: number;
  readonly options: Omit<CompareOptions, 'trace' | 'train'>;
}

export type WorkerReply =
  | { readonly ok: true; readonly result: Comparison }
  | { readonly ok: false; readonly code: ErrorCode; readonly message: string; readonly details: Record<string, unknown> };

class WorkerError extends PrestageError {}

export interface SimulationServiceOptions {
  /** Where the bundled traces are. Default: the package's data/traces/. */
  readonly tracesDir?: string;
  /** Default SIMULATION_LIMITS.timeMs. */
  readonly timeLimitMs?: number;
}

/** The worker module next to this one: .ts under tsx (tests), .js when compiled. */
const WORKER_URL = new URL(`./simulation-worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url);

/**
 * Under tsx (tests), a worker does not inherit the parent's TypeScript hooks on Node 20: a tiny
 * bootstrap registers tsx inside it first (as the copy workers do).
 */
function startWorker(job: WorkerJob): Worker {
  if (!WORKER_URL.pathname.endsWith('.ts')) return new Worker(WORKER_URL, { workerData: job });
  const api = import.meta.resolve('tsx/esm/api');
  const bootstrap = `import(${JSON.stringify(api)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(WORKER_URL.href)}); });`;
  return new Worker(bootstrap, { eval: true, workerData: job, execArgv: withoutTsx(process.execArgv) });
}

/** Node options minus `--import tsx` (either spelling), which the bootstrap replaces. */
function withoutTsx(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (/^--(import|loader|require)$/.test(arg) && argv[i + 1]?.includes('tsx')) i++;
    else if (!/^--(import|loader|require)=.*tsx/.test(arg)) out.push(arg);
  }
  return out;
}

export class SimulationService {
  private readonly tracesDir: string;
  private readonly timeLimitMs: number;
  private running: Promise<unknown> = Promise.resolve();
  private waiting = 0;
  private readonly workers = new Set<Worker>();
  private closed = false;

  constructor(o: SimulationServiceOptions = {}) {
    this.tracesDir = o.tracesDir ?? fileURLToPath(new URL('../../data/traces/', import.meta.url));
    this.timeLimitMs = o.timeLimitMs ?? SIMULATION_LIMITS.timeMs;
  }

  /** Checks the request, then runs it after the run in progress (if any). */
  run(req: SimulationRequest): Promise<SimulationReply> {
    const job = this.plan(req);
    if (this.closed) return Promise.reject(new UnavailableError('the server is stopping'));
    if (this.waiting >= SIMULATION_LIMITS.queued + 1) {
      return Promise.reject(new UnavailableError(`${this.waiting} simulations are running or waiting already; try again when they are done`, { waiting: this.waiting }));
    }
    const bundled = req.bundled && BUNDLED_TRACES[req.bundled];
    this.waiting++;
    const result = this.running.then(() => this.execute(job)).finally(() => this.waiting--);
    this.running = result.catch(() => undefined);
    return result.then((r) => ({ ...r, attribution: r.format === 'azure' && bundled ? bundled.attribution : null, learnedOn: job.train?.name ?? null }));
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.workers].map((w) => w.terminate()));
  }

  private plan(req: SimulationRequest): WorkerJob {
    if ((req.bundled === undefined) === (req.text === undefined)) throw new InputError('give exactly one of bundled (a trace shipped with prestage) and text (a trace of your own)', {});
    const L = SIMULATION_LIMITS;
    if (req.policies.length === 0 || req.policies.length > L.policies) throw new InputError(`name 1 to ${L.policies} policies`, { field: 'policies' });
    if (req.text !== undefined && req.text.length > L.traceChars) throw new InputError(`the trace is ${req.text.length} characters; at most ${L.traceChars} are simulated here (run \`prestage simulate\` for bigger ones)`, { field: 'text' });
    let budget: Budget | null = null;
    if (req.budget !== undefined && req.budget.trim() !== '') budget = parseBudget(req.budget);
    const options: WorkerJob['options'] = {
      policies: req.policies,
      top: Math.min(req.top ?? L.pools, L.pools),
      leadTimeS: req.leadTimeS ?? 120,
      maxPoints: L.points,
      budget,
      ...(req.hours !== undefined && { hours: req.hours }),
      ...(req.concurrency !== undefined && { concurrency: req.concurrency }),
    };
    if (req.bundled !== undefined) {
      const b = BUNDLED_TRACES[req.bundled];
      const train = req.learn === false ? null : { path: `${this.tracesDir}/${b.train}`, name: b.train };
      return { trace: { kind: 'file', path: `${this.tracesDir}/${b.file}`, name: b.file }, train, seed: 1, options };
    }
    return { trace: { kind: 'text', text: req.text!, name: req.name ?? 'trace.csv' }, train: null, seed: 1, options };
  }

  private execute(job: WorkerJob): Promise<Comparison> {
    if (this.closed) return Promise.reject(new UnavailableError('the server is stopping'));
    return new Promise<Comparison>((resolve, reject) => {
      const worker = startWorker(job);
      this.workers.add(worker);
      let settled = false;
      const settle = (f: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.workers.delete(worker);
        void worker.terminate();
        f();
      };
      const timer = setTimeout(
        () =>
          settle(() =>
            reject(new InputError(`the simulation ran past ${Math.round(this.timeLimitMs / 1000)} s and was stopped: compare fewer policies, fewer pools or fewer hours (\`prestage simulate\` has no limit)`, { limitMs: this.timeLimitMs })),
          ),
        this.timeLimitMs,
      );
      worker.once('message', (reply: WorkerReply) => settle(() => (reply.ok ? resolve(reply.result) : reject(new WorkerError(reply.code, reply.message, reply.details)))));
      worker.once('error', (err) => settle(() => reject(err)));
      worker.once('exit', (code) => settle(() => reject(this.closed ? new UnavailableError('the server is stopping') : new Error(`the simulation worker exited with code ${code}`))));
    });
  }
}
