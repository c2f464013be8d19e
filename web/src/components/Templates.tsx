import { useState } from 'preact/hooks';
import type { Template } from '../../../src/api/types.js';
import { api, seg } from '../api.js';
import { ago, ms } from '../format.js';
import { useAction, useLoad } from '../hooks.js';
import { useConfirm } from './Confirm.js';
import { Notice } from './Notice.js';

interface Props {
  readonly templates: readonly Template[];
  readonly canAct: boolean;
  readonly onChanged: () => void;
}

function buildText(t: Template): string {
  const b = t.latestBuild;
  if (!b) return 'never built';
  const v = b.version === null ? '' : ` @${b.version}`;
  return `${b.state}${v}${b.buildMs === null ? '' : ` in ${ms(b.buildMs)}`}, ${ago(b.startedAt)}`;
}

export function Templates({ templates, canAct, onChanged }: Props) {
  const action = useAction();
  const [dialog, confirm] = useConfirm();
  const [log, setLog] = useState<string | null>(null);
  const rebuild = async (t: Template) => {
    const ok = await confirm(
      `Rebuild ${t.name}?`,
      `The template is built again from ${t.base}. If the result differs, it becomes a new version and the pool of ${t.name} replaces its spares (mapped copies are kept).`,
      'Rebuild',
    );
    if (!ok) return;
    void action.run(async () => {
      const b = await api.post('/v1/templates/{name}/build', `/v1/templates/${seg(t.name)}/build`);
      onChanged();
      return `${t.name}: ${b.state}${b.version === null ? '' : ` @${b.version}`}${b.buildMs === null ? '' : ` in ${ms(b.buildMs)}`}`;
    });
  };
  return (
    <section aria-labelledby="templates-h" class="card">
      <h2 id="templates-h">Templates</h2>
      {templates.length === 0 ? (
        <p>No templates. `prestage template apply FILE` makes one.</p>
      ) : (
        <div class="scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">Template</th>
                <th scope="col">Base</th>
                <th scope="col">Versions</th>
                <th scope="col">Last build</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {templates.map((t) => (
                <tr key={t.name} data-template={t.name}>
                  <th scope="row">{t.name}</th>
                  <td>
                    {t.base} ({t.rebuild})
                  </td>
                  <td>{t.versions.map((v) => `@${v.version}`).join(' ') || '–'}</td>
                  <td class={t.latestBuild?.state === 'failed' ? 'bad' : undefined}>{buildText(t)}</td>
                  <td class="actions">
                    <button type="button" aria-expanded={log === t.name} onClick={() => setLog(log === t.name ? null : t.name)}>
                      Build log<span class="sr-only"> of {t.name}</span>
                    </button>
                    {canAct && (
                      <button type="button" disabled={action.busy} onClick={() => void rebuild(t)}>
                        Rebuild<span class="sr-only"> {t.name}</span>
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Notice error={action.error} done={action.done} />
      {log !== null && <BuildLog name={log} />}
      {dialog}
    </section>
  );
}

function BuildLog({ name }: { readonly name: string }) {
  const builds = useLoad(() => api.get('/v1/templates/{name}/builds', `/v1/templates/${seg(name)}/builds?limit=1`), name);
  const b = builds.data?.[0];
  return (
    <div class="panel">
      <h3>Latest build of {name}</h3>
      {builds.error && (
        <p class="notice error" role="alert">
          {builds.error}
        </p>
      )}
      {b ? (
        <>
          <p>
            {b.state}, {b.trigger}, started {ago(b.startedAt)}
            {b.error ? `: ${b.error}` : ''}
          </p>
          <pre class="log" tabIndex={0} aria-label={`build log of ${name}`}>
            {b.log ?? '(no log)'}
          </pre>
        </>
      ) : (
        !builds.error && <p>{builds.data ? 'No build yet.' : 'Loading…'}</p>
      )}
    </div>
  );
}
