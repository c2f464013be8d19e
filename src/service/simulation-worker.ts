/**
 * Runs one policy comparison off the server's event loop: a replay of the Azure trace takes
 * seconds of CPU, which on the main thread would stall every provision meanwhile. The parent
 * terminates this thread when it runs past its time limit.
 */
import { readFile } from 'node:fs/promises';
import { parentPort, workerData } from 'node:worker_threads';
import { isPrestageError } from '../domain/index.js';
import { comparePolicies, parseTraceText } from '../pool/simulator/index.js';
import type { WorkerJob, WorkerReply } from './simulations.js';

async function run(job: WorkerJob): Promise<WorkerReply> {
  try {
    const text = job.trace.kind === 'file' ? await readFile(job.trace.path, 'utf8') : job.trace.text;
    const trace = parseTraceText(text, job.trace.name, job.seed);
    const train = job.train ? parseTraceText(await readFile(job.train.path, 'utf8'), job.train.name, job.seed + 1) : null;
    return { ok: true, result: comparePolicies({ ...job.options, trace, train }) };
  } catch (e) {
    if (isPrestageError(e)) return { ok: false, code: e.code, message: e.message, details: { ...e.details } };
    return { ok: false, code: 'PRESTAGE_INTERNAL', message: e instanceof Error ? e.message : String(e), details: {} };
  }
}

parentPort!.postMessage(await run(workerData as WorkerJob));
