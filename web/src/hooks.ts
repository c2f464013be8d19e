import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { messageOf } from './api.js';

export interface Loaded<T> {
  readonly data: T | undefined;
  /** The last load's error message; the data of the load before stays shown. */
  readonly error: string | undefined;
  readonly reload: () => void;
}

/**
 * Loads `load()` now, again whenever `key` changes, and every `everyMs` when given. A load
 * still running is not started twice; a late answer never overwrites a newer one.
 */
export function useLoad<T>(load: () => Promise<T>, key: unknown, everyMs?: number): Loaded<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<string>();
  const loadRef = useRef(load);
  loadRef.current = load;
  const generation = useRef(0);
  const reload = useCallback(() => {
    const g = ++generation.current;
    loadRef.current().then(
      (d) => {
        if (g !== generation.current) return;
        setData(d);
        setError(undefined);
      },
      (e: unknown) => g === generation.current && setError(messageOf(e)),
    );
  }, []);
  useEffect(reload, [key, reload]);
  useEffect(() => {
    if (everyMs === undefined) return undefined;
    const t = setInterval(reload, everyMs);
    return () => clearInterval(t);
  }, [everyMs, reload]);
  return { data, error, reload };
}

/** Runs an action, keeping its state for the form that started it: busy, and its outcome. */
export function useAction(): {
  busy: boolean;
  error: string | undefined;
  done: string | undefined;
  run: (f: () => Promise<string | undefined>) => Promise<boolean>;
  clear: () => void;
} {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const [done, setDone] = useState<string>();
  const run = useCallback(async (f: () => Promise<string | undefined>) => {
    setBusy(true);
    setError(undefined);
    setDone(undefined);
    try {
      setDone(await f());
      return true;
    } catch (e) {
      setError(messageOf(e));
      return false;
    } finally {
      setBusy(false);
    }
  }, []);
  const clear = useCallback(() => {
    setError(undefined);
    setDone(undefined);
  }, []);
  return { busy, error, done, run, clear };
}
