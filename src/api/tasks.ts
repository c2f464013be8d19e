/** Long operations in progress (imports), so clients can draw a progress bar while they wait. */
export interface Task {
  /** import: a file on the server; upload: a request body; download: a URL the server fetches; build: a template. */
  readonly kind: 'import' | 'upload' | 'download' | 'build';
  readonly subject: string;
  doneBytes: number;
  totalBytes: number;
  readonly startedAt: string;
}

export class TaskBoard {
  private readonly tasks = new Set<Task>();

  begin(kind: Task['kind'], subject: string): Task {
    const t: Task = { kind, subject, doneBytes: 0, totalBytes: 0, startedAt: new Date().toISOString() };
    this.tasks.add(t);
    return t;
  }

  end(t: Task): void {
    this.tasks.delete(t);
  }

  list(): Task[] {
    return [...this.tasks];
  }
}
