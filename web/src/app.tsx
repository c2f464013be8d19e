import { useEffect, useState } from 'preact/hooks';
import { api, saveToken, savedToken, whenUnauthorized } from './api.js';
import { Overview } from './components/Overview.js';
import { SignIn, type Session } from './components/SignIn.js';
import { Simulator } from './components/Simulator.js';

type Page = 'overview' | 'simulator';

const pageOf = (hash: string): Page => (hash === '#/simulator' ? 'simulator' : 'overview');

/** Roles that may act (set policies, add hosts, provision, upload, rebuild); a reader only sees. */
const ACTS = new Set(['admin', 'operator']);

export function App() {
  const [session, setSession] = useState<Session | null>(null);
  const [checking, setChecking] = useState(savedToken() !== null);
  const [reason, setReason] = useState<string>();
  const [page, setPage] = useState<Page>(pageOf(location.hash));

  useEffect(() => {
    const onHash = () => setPage(pageOf(location.hash));
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);

  // A token kept in this tab's session is checked again on load (it may have been revoked).
  useEffect(() => {
    const token = savedToken();
    if (token === null) return;
    api.whoami(token).then(
      (who) => {
        setSession({ token, name: who.name, role: who.role });
        setChecking(false);
      },
      () => {
        saveToken(null);
        setChecking(false);
      },
    );
  }, []);

  useEffect(
    () =>
      whenUnauthorized(() => {
        saveToken(null);
        setSession(null);
        setReason('The server refused the token (revoked or expired): sign in again.');
      }),
    [],
  );

  const signIn = (s: Session) => {
    saveToken(s.token);
    setReason(undefined);
    setSession(s);
  };
  const signOut = () => {
    saveToken(null);
    setSession(null);
  };

  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <h1>prestage</h1>
        {session && (
          <nav aria-label="Pages">
            <a href="#/" aria-current={page === 'overview' ? 'page' : undefined}>
              Overview
            </a>
            <a href="#/simulator" aria-current={page === 'simulator' ? 'page' : undefined}>
              Simulator
            </a>
          </nav>
        )}
        {session && (
          <div class="who">
            <span>
              {session.name} <span class={`role ${session.role}`}>{session.role}</span>
            </span>
            <button type="button" onClick={signOut}>
              Sign out
            </button>
          </div>
        )}
      </header>
      {checking ? (
        <main id="main">
          <p>Checking the saved token…</p>
        </main>
      ) : !session ? (
        <SignIn onSignedIn={signIn} reason={reason} />
      ) : page === 'simulator' ? (
        <Simulator />
      ) : (
        <Overview canAct={ACTS.has(session.role)} />
      )}
    </>
  );
}
