/**
 * A throwaway PKI made with the openssl CLI, in the directory layout qemu and libnbd read:
 * the server's dir (ca-cert.pem, server-cert.pem, server-key.pem) and one client dir per host
 * (ca-cert.pem, client-cert.pem, client-key.pem) whose certificate's CN is the host id.
 */
import { execFile } from 'node:child_process';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

async function openssl(cwd: string, args: readonly string[]): Promise<void> {
  try {
    await run('openssl', args, { cwd, timeout: 30_000 });
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (code === 'ENOENT') throw new Error('openssl not found (apt-get install openssl)');
    throw new Error(`openssl ${args.join(' ')} failed: ${(e as { stderr?: string }).stderr ?? String(e)}`);
  }
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

export interface Pki {
  /** ca-cert.pem, server-cert.pem, server-key.pem: `--nbd-tls-dir`. */
  readonly serverDir: string;
  /** A dir per host for libnbd's `tls-certificates=` and qemu's `tls-creds-x509,dir=`. */
  clientDir(hostId: string): string;
}

/** A CA named `caName` under `dir`, a server certificate for 127.0.0.1/localhost, and client certificates for `hosts`. */
export async function makePki(dir: string, hosts: readonly string[], caName = 'prestage-test-ca'): Promise<Pki> {
  await mkdir(dir, { recursive: true });
  await openssl(dir, ['req', '-x509', ...EC, '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem', '-days', '2', '-subj', `/CN=${caName}`]);
  const sign = async (name: string, cn: string, ext: string) => {
    await writeFile(join(dir, `${name}.ext`), ext);
    await openssl(dir, ['req', ...EC, '-keyout', `${name}-key.pem`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`]);
    await openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', `${name}-cert.pem`, '-days', '2', '-extfile', `${name}.ext`]);
  };
  const serverDir = join(dir, 'server');
  await mkdir(serverDir);
  await sign('server', 'localhost', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n');
  await copyFile(join(dir, 'ca-cert.pem'), join(serverDir, 'ca-cert.pem'));
  await copyFile(join(dir, 'server-cert.pem'), join(serverDir, 'server-cert.pem'));
  await copyFile(join(dir, 'server-key.pem'), join(serverDir, 'server-key.pem'));
  for (const host of hosts) {
    await sign(host, host, 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n');
    const d = join(dir, `client-${host}`);
    await mkdir(d);
    await copyFile(join(dir, 'ca-cert.pem'), join(d, 'ca-cert.pem'));
    await copyFile(join(dir, `${host}-cert.pem`), join(d, 'client-cert.pem'));
    await copyFile(join(dir, `${host}-key.pem`), join(d, 'client-key.pem'));
  }
  return { serverDir, clientDir: (host) => join(dir, `client-${host}`) };
}
