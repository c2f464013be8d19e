import { useState } from 'preact/hooks';
import type { Host } from '../../../src/api/types.js';
import { api, seg } from '../api.js';
import { ms } from '../format.js';
import { useAction } from '../hooks.js';
import { useConfirm } from './Confirm.js';
import { Notice } from './Notice.js';

interface Props {
  readonly hosts: readonly Host[];
  /** What a host can be provisioned from: the pools' sources. */
  readonly sources: readonly string[];
  readonly canAct: boolean;
  readonly onChanged: () => void;
}

/** `rack=r1, row=4` → { rack: 'r1', row: '4' }; the API checks the names. */
function parseLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of text.split(',')) {
    const p = part.trim();
    if (p === '') continue;
    const eq = p.indexOf('=');
    if (eq <= 0) throw new Error(`label '${p}' is not NAME=VALUE`);
    out[p.slice(0, eq).trim()] = p.slice(eq + 1).trim();
  }
  return out;
}

export function Hosts({ hosts, sources, canAct, onChanged }: Props) {
  const action = useAction();
  const [dialog, confirm] = useConfirm();
  const [busyHost, setBusyHost] = useState<string | null>(null);
  const [picked, setPicked] = useState<Record<string, string>>({});

  const provision = (h: Host) => {
    const source = picked[h.id] ?? sources[0];
    if (source === undefined) return;
    setBusyHost(h.id);
    void action
      .run(async () => {
        const r = await api.post('/v1/hosts/{id}/provision', `/v1/hosts/${seg(h.id)}/provision`, { source });
        onChanged();
        return `${r.hostId} got a copy of ${r.image} (${r.outcome}, ${ms(r.waitMs)})`;
      })
      .finally(() => setBusyHost(null));
  };
  const release = async (h: Host) => {
    if (!(await confirm(`Release ${h.id}?`, `The host is cut off from its copy of ${h.mapping?.source ?? 'its image'} at once, and the copy is deleted with everything the host wrote to it.`, 'Release'))) return;
    setBusyHost(h.id);
    void action
      .run(async () => {
        const r = await api.post('/v1/hosts/{id}/release', `/v1/hosts/${seg(h.id)}/release`);
        onChanged();
        return `${r.hostId} released; copy ${r.copyId} deleted`;
      })
      .finally(() => setBusyHost(null));
  };

  return (
    <section aria-labelledby="hosts-h" class="card">
      <h2 id="hosts-h">Hosts</h2>
      {hosts.length === 0 ? (
        <p>No hosts registered.</p>
      ) : (
        <div class="scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">Host</th>
                <th scope="col">MAC</th>
                <th scope="col">Mapped</th>
                {canAct && <th scope="col">Actions</th>}
              </tr>
            </thead>
            <tbody>
              {hosts.map((h) => (
                <tr key={h.id} data-host={h.id}>
                  <th scope="row">
                    {h.id}
                    {Object.keys(h.labels).length > 0 && <span class="labels">{Object.entries(h.labels).map(([k, v]) => `${k}=${v}`).join(' ')}</span>}
                  </th>
                  <td>{h.mac ?? '–'}</td>
                  <td data-col="mapping">{h.mapping ? <span title={`copy ${h.mapping.copyId}`}>{h.mapping.source}</span> : '–'}</td>
                  {canAct && (
                    <td class="actions">
                      {h.mapping ? (
                        <button type="button" class="danger" disabled={busyHost === h.id} onClick={() => void release(h)}>
                          Release<span class="sr-only"> {h.id}</span>
                        </button>
                      ) : (
                        <>
                          <label class="sr-only" for={`src-${h.id}`}>
                            Source for {h.id}
                          </label>
                          <select id={`src-${h.id}`} value={picked[h.id] ?? sources[0] ?? ''} onChange={(e) => setPicked({ ...picked, [h.id]: e.currentTarget.value })}>
                            {sources.map((s) => (
                              <option key={s} value={s}>
                                {s}
                              </option>
                            ))}
                          </select>
                          <button type="button" disabled={busyHost === h.id || sources.length === 0} onClick={() => provision(h)}>
                            {busyHost === h.id ? 'Provisioning…' : 'Provision'}
                            <span class="sr-only"> {h.id}</span>
                          </button>
                        </>
                      )}
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Notice error={action.error} done={action.done} />
      {canAct && <AddHost onAdded={onChanged} />}
      {dialog}
    </section>
  );
}

function AddHost({ onAdded }: { readonly onAdded: () => void }) {
  const [id, setId] = useState('');
  const [mac, setMac] = useState('');
  const [labels, setLabels] = useState('');
  const action = useAction();
  const submit = (e: Event) => {
    e.preventDefault();
    void action.run(async () => {
      const h = await api.post('/v1/hosts', '/v1/hosts', { id: id.trim(), ...(mac.trim() !== '' && { mac: mac.trim() }), labels: parseLabels(labels) });
      setId('');
      setMac('');
      setLabels('');
      onAdded();
      return `host ${h.id} added`;
    });
  };
  return (
    <form class="panel" onSubmit={submit} aria-labelledby="add-host-h">
      <h3 id="add-host-h">Add a host</h3>
      <div class="fields">
        <label>
          Host id
          <input required value={id} onInput={(e) => setId(e.currentTarget.value)} autocomplete="off" placeholder="web-01" />
        </label>
        <label>
          MAC (optional)
          <input value={mac} onInput={(e) => setMac(e.currentTarget.value)} autocomplete="off" placeholder="52:54:00:00:00:01" />
        </label>
        <label>
          Labels (optional)
          <input value={labels} onInput={(e) => setLabels(e.currentTarget.value)} autocomplete="off" placeholder="rack=r1, row=4" />
        </label>
      </div>
      <div class="buttons">
        <button type="submit" disabled={action.busy}>
          Add host
        </button>
      </div>
      <Notice error={action.error} done={action.done} />
    </form>
  );
}
