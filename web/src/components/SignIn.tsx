import { useState } from 'preact/hooks';
import { api, messageOf } from '../api.js';

export interface Session {
  readonly token: string;
  readonly name: string;
  readonly role: string;
}

/** Asks for an API token and checks it with the server before keeping it. */
export function SignIn({ onSignedIn, reason }: { readonly onSignedIn: (s: Session) => void; readonly reason?: string | undefined }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const t = token.trim();
      const who = await api.whoami(t);
      onSignedIn({ token: t, name: who.name, role: who.role });
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main id="main" class="signin">
      <form class="card" onSubmit={(e) => void submit(e)} aria-labelledby="signin-h">
        <h2 id="signin-h">Sign in</h2>
        <p>
          With an API token: a <em>reader</em> token shows everything but secrets; an <em>operator</em> or <em>admin</em> token can also act. <code>prestage token create NAME --role reader</code> makes one.
        </p>
        {reason && <p class="notice">{reason}</p>}
        <label>
          API token
          <input type="password" required autocomplete="off" spellcheck={false} value={token} onInput={(e) => setToken(e.currentTarget.value)} placeholder="pst_…" />
        </label>
        <div class="buttons">
          <button type="submit" disabled={busy}>
            Sign in
          </button>
        </div>
        {error && (
          <p class="notice error" role="alert">
            {error}
          </p>
        )}
      </form>
    </main>
  );
}
