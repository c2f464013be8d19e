import { useRef, useState } from 'preact/hooks';
import type { Image } from '../../../src/api/types.js';
import { uploadImage } from '../api.js';
import { ago, bytes } from '../format.js';
import { useAction } from '../hooks.js';
import { Notice } from './Notice.js';

interface Props {
  readonly images: readonly Image[];
  readonly canAct: boolean;
  readonly onChanged: () => void;
}

export function Images({ images, canAct, onChanged }: Props) {
  // Newest version of each name first, then the older ones under it.
  const sorted = [...images].sort((a, b) => a.name.localeCompare(b.name) || b.version - a.version);
  return (
    <section aria-labelledby="images-h" class="card">
      <h2 id="images-h">Images</h2>
      {sorted.length === 0 ? (
        <p>No images yet.</p>
      ) : (
        <div class="scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">Image</th>
                <th scope="col">Kind</th>
                <th scope="col" class="num">Size</th>
                <th scope="col">State</th>
                <th scope="col">Imported</th>
              </tr>
            </thead>
            <tbody>
              {sorted.map((i) => (
                <tr key={i.id} data-image={i.ref}>
                  <th scope="row" title={`sha256 ${i.sha256}`}>
                    {i.ref}
                  </th>
                  <td>{i.kind}</td>
                  <td class="num">{bytes(i.sizeBytes)}</td>
                  <td>{i.state}</td>
                  <td>{ago(i.createdAt)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {canAct && <Upload onUploaded={onChanged} />}
    </section>
  );
}

function Upload({ onUploaded }: { readonly onUploaded: () => void }) {
  const [name, setName] = useState('');
  const [progress, setProgress] = useState<{ sent: number; total: number } | null>(null);
  const file = useRef<HTMLInputElement>(null);
  const action = useAction();
  const submit = (e: Event) => {
    e.preventDefault();
    const f = file.current?.files?.[0];
    void action.run(async () => {
      if (!f) throw new Error('choose an image file (raw or qcow2) to upload');
      setProgress({ sent: 0, total: f.size });
      try {
        const image = await uploadImage(name.trim(), f, (sent, total) => setProgress({ sent, total }));
        onUploaded();
        return `uploaded ${image.ref} (${bytes(image.sizeBytes)}, sha256 ${image.sha256.slice(0, 12)}…)`;
      } finally {
        setProgress(null);
      }
    });
  };
  return (
    <form class="panel" onSubmit={submit} aria-labelledby="upload-h">
      <h3 id="upload-h">Upload an image</h3>
      <div class="fields">
        <label>
          Name
          <input required value={name} onInput={(e) => setName(e.currentTarget.value)} autocomplete="off" placeholder="debian-12" />
        </label>
        <label>
          File (raw or qcow2)
          <input type="file" ref={file} required />
        </label>
      </div>
      <div class="buttons">
        <button type="submit" disabled={action.busy}>
          Upload
        </button>
      </div>
      {progress && (
        <p class="progress">
          <label>
            Uploading {bytes(progress.sent)} of {bytes(progress.total)}
            <progress max={progress.total || 1} value={progress.sent} />
          </label>
        </p>
      )}
      <Notice error={action.error} done={action.done} />
    </form>
  );
}
