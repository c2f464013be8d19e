import type { HostCredentials, HostIscsiSecrets, IscsiHostAuth, Store } from '../domain/index.js';
import { targetNameFor } from '../exporters/iscsi/names.js';

/** The stored secrets as the exporter takes them: the CHAP user is the host id, the mutual one its target's name. */
export function iscsiHostAuth(hostId: string, s: HostIscsiSecrets): IscsiHostAuth {
  return {
    initiator: s.iqn,
    chap: { user: hostId, secret: s.chapSecret },
    ...(s.mutualSecret !== null && { mutual: { user: targetNameFor(hostId), secret: s.mutualSecret } }),
  };
}

/** A host's credentials as the store has them now; null when it has none (removed, or never added). */
export async function readHostCredentials(store: Store, hostId: string): Promise<HostCredentials | null> {
  const [psk, iscsi] = await Promise.all([store.getHostKey(hostId), store.getHostIscsi(hostId)]);
  if (psk === undefined && iscsi === undefined) return null;
  return { psk: psk ?? null, iscsi: iscsi ? iscsiHostAuth(hostId, iscsi) : null };
}

/** Every host's credentials, in two queries. */
export async function readAllHostCredentials(store: Store): Promise<Map<string, HostCredentials>> {
  const [keys, logins] = await Promise.all([store.listHostKeys(), store.listHostIscsi()]);
  const all = new Map<string, { psk: string | null; iscsi: IscsiHostAuth | null }>();
  const entry = (hostId: string) => all.get(hostId) ?? all.set(hostId, { psk: null, iscsi: null }).get(hostId)!;
  for (const k of keys) entry(k.hostId).psk = k.psk;
  for (const l of logins) entry(l.hostId).iscsi = iscsiHostAuth(l.hostId, l);
  return all;
}
