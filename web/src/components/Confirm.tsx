import { useCallback, useRef, useState } from 'preact/hooks';

interface Question {
  readonly title: string;
  readonly body: string;
  readonly action: string;
  readonly answer: (yes: boolean) => void;
}

/**
 * Asks before a destructive action, in a modal <dialog>: it keeps focus inside, Escape
 * cancels, and Cancel has the focus first so Enter does not destroy by accident.
 */
export function useConfirm(): [preact.JSX.Element | null, (title: string, body: string, action: string) => Promise<boolean>] {
  const [q, setQ] = useState<Question | null>(null);
  const dialog = useRef<HTMLDialogElement>(null);
  const ask = useCallback(
    (title: string, body: string, action: string) =>
      new Promise<boolean>((resolve) => {
        setQ({ title, body, action, answer: resolve });
        // Opened once it is in the DOM.
        queueMicrotask(() => requestAnimationFrame(() => dialog.current?.showModal()));
      }),
    [],
  );
  const close = (yes: boolean) => {
    dialog.current?.close();
    q?.answer(yes);
    setQ(null);
  };
  const el = q && (
    <dialog ref={dialog} class="confirm" aria-labelledby="confirm-title" aria-describedby="confirm-body" onCancel={() => close(false)}>
      <h2 id="confirm-title">{q.title}</h2>
      <p id="confirm-body">{q.body}</p>
      <div class="buttons">
        <button type="button" autofocus onClick={() => close(false)}>
          Cancel
        </button>
        <button type="button" class="danger" onClick={() => close(true)}>
          {q.action}
        </button>
      </div>
    </dialog>
  );
  return [el, ask];
}
