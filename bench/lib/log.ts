const started = performance.now();

/** A progress line on stderr, stamped with the seconds since the bench started. */
export function log(message: string): void {
  const s = ((performance.now() - started) / 1000).toFixed(1).padStart(7);
  process.stderr.write(`[${s}s] ${message}\n`);
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
