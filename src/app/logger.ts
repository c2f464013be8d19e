/**
 * The server's log: JSON lines for machines (the default when stdout is not a terminal), or
 * pino-pretty's readable lines for a person watching a terminal.
 */
import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';

export type LogFormat = 'pretty' | 'json';

export function defaultLogFormat(stdout: { readonly isTTY?: boolean } = process.stdout): LogFormat {
  return stdout.isTTY === true ? 'pretty' : 'json';
}

export function makeLogger(level: string, format: LogFormat): Logger {
  if (format === 'json') return pino({ level });
  // Synchronous, in this thread: a line is out before the process exits on a fatal error.
  return pino({ level }, pretty({ colorize: process.stdout.isTTY === true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', sync: true }));
}
