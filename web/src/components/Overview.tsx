import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import type { Event as ApiEvent } from '../../../src/api/types.js';
import { api } from '../api.js';
import { followEvents, type FeedState } from '../events.js';
import { useLoad } from '../hooks.js';
import { Copies } from './Copies.js';
import { Events } from './Events.js';
import { Hosts } from './Hosts.js';
import { Images } from './Images.js';
import { Pools } from './Pools.js';
import { Templates } from './Templates.js';

/** Events kept on the page. */
const KEEP = 100;
/** However busy the log, each list is fetched again at most this often because of it. */
const REFETCH_MS = 500;

type Topic = 'status' | 'hosts' | 'images' | 'templates';

/** What an event changes, so only those lists are fetched again. */
function topics(type: string): Topic[] {
  if (type.startsWith('host.')) return ['hosts', 'status'];
  if (type.startsWith('image.')) return ['images', 'templates', 'status'];
  if (type.startsWith('template.')) return ['templates', 'images'];
  return ['status'];
}

/** A counter per topic, bumped by events at most every REFETCH_MS: a list's `key` for useLoad. */
function useTopics(): [Record<Topic, number>, (t: Iterable<Topic>) => void] {
  const [ticks, setTicks] = useState<Record<Topic, number>>({ status: 0, hosts: 0, images: 0, templates: 0 });
  const pending = useRef(new Set<Topic>());
  const timer = useRef<ReturnType<typeof setTimeout>>();
  useEffect(() => () => clearTimeout(timer.current), []);
  const bump = useCallback((ts: Iterable<Topic>) => {
    for (const t of ts) pending.current.add(t);
    timer.current ??= setTimeout(() => {
      timer.current = undefined;
      const due = [...pending.current];
      pending.current.clear();
      setTicks((old) => ({ ...old, ...Object.fromEntries(due.map((t) => [t, old[t] + 1])) }));
    }, REFETCH_MS);
  }, []);
  return [ticks, bump];
}

export function Overview({ canAct }: { readonly canAct: boolean }) {
  const [ticks, bump] = useTopics();
  const status = useLoad(() => api.get('/v1/status', '/v1/status'), ticks.status, 2000);
  const hosts = useLoad(() => api.get('/v1/hosts', '/v1/hosts'), ticks.hosts, 15_000);
  const images = useLoad(() => api.get('/v1/images', '/v1/images'), ticks.images, 30_000);
  const templates = useLoad(() => api.get('/v1/templates', '/v1/templates'), ticks.templates, 30_000);
  const [events, setEvents] = useState<readonly ApiEvent[]>([]);
  const [feed, setFeed] = useState<{ state: FeedState; detail?: string | undefined }>({ state: 'connecting' });

  useEffect(
    () =>
      followEvents({
        onEvents: (batch) => {
          // Newest first; the backlog may arrive after newer events, so merge by sequence number.
          setEvents((old) => {
            const bySeq = new Map([...old, ...batch.slice(-KEEP)].map((e) => [e.seq, e]));
            return [...bySeq.values()].sort((a, b) => b.seq - a.seq).slice(0, KEEP);
          });
          bump(new Set(batch.flatMap((e) => topics(e.type))));
        },
        onState: (state, detail) => setFeed({ state, detail }),
      }),
    [bump],
  );

  // An action changed something: everything it may touch is fetched again now.
  const changed = useCallback(() => {
    status.reload();
    hosts.reload();
    images.reload();
    templates.reload();
  }, [status, hosts, images, templates]);

  const s = status.data;
  const errors = [status.error, hosts.error, images.error, templates.error].filter((e): e is string => e !== undefined);
  return (
    <main id="main" class="grid">
      {errors.length > 0 && (
        <p class="notice error wide" role="alert">
          {[...new Set(errors)].join('; ')}
        </p>
      )}
      {s && s.problems.length > 0 && (
        <section class="card wide problems" aria-labelledby="problems-h">
          <h2 id="problems-h">Needs attention</h2>
          <ul>
            {s.problems.map((p) => (
              <li key={p.source}>{p.message}</li>
            ))}
          </ul>
        </section>
      )}
      {s ? <Pools pools={s.pools} images={images.data ?? []} canAct={canAct} onChanged={changed} /> : <p class="wide">Loading…</p>}
      {s && <Copies copies={s.copiesInFlight} waiting={s.waitingProvisions} />}
      <Hosts hosts={hosts.data ?? []} sources={(s?.pools ?? []).map((p) => p.source)} canAct={canAct} onChanged={changed} />
      <Images images={images.data ?? []} canAct={canAct} onChanged={changed} />
      <Templates templates={templates.data ?? []} canAct={canAct} onChanged={changed} />
      <Events events={events} state={feed.state} detail={feed.detail} />
    </main>
  );
}
