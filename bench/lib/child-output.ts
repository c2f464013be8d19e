import type { Readable } from 'node:stream';

/**
 * Follows a child's output line by line: keeps the last 40 lines (for an error report) and
 * echoes them to stderr tagged with `name`. With `onStdoutLine`, stdout lines go there instead
 * of being echoed (a child that speaks a line protocol on stdout).
 */
export function followOutput(child: { stdout: Readable; stderr: Readable }, name: string, onStdoutLine?: (line: string) => void): string[] {
  const tail: string[] = [];
  for (const [stream, isStdout] of [[child.stdout, true], [child.stderr, false]] as const) {
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (line.trim() === '') continue;
        tail.push(line);
        if (tail.length > 40) tail.shift();
        if (isStdout && onStdoutLine) onStdoutLine(line);
        else process.stderr.write(`  [${name}] ${line.length > 400 ? `${line.slice(0, 400)}…` : line}\n`);
      }
    });
  }
  return tail;
}
