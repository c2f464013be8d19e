/** An action's outcome: its error (with the API's message) or what it did. */
export function Notice({ error, done }: { readonly error?: string | undefined; readonly done?: string | undefined }) {
  if (error) {
    return (
      <p class="notice error" role="alert">
        {error}
      </p>
    );
  }
  return (
    <p class="notice done" role="status">
      {done ?? ''}
    </p>
  );
}
