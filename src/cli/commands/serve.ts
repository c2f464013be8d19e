import { Command, Option, type CommandUnknownOpts } from '@commander-js/extra-typings';
import { UnavailableError, errnoCode } from '../../domain/index.js';
import { count, positive } from '../args.js';
import type { CliContext } from '../context.js';

/** After the app stopped, whatever still holds the event loop open gets this long. */
const EXIT_GRACE_MS = 3000;

/** Resolves on the first SIGINT or SIGTERM; a second one exits at once. */
function firstSignal(ctx: CliContext): { signal: Promise<NodeJS.Signals>; dispose: () => void } {
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];
  let received: NodeJS.Signals | undefined;
  let resolve!: (s: NodeJS.Signals) => void;
  const signal = new Promise<NodeJS.Signals>((r) => (resolve = r));
  const onSignal = (s: NodeJS.Signals) => {
    if (received === undefined) {
      received = s;
      ctx.err(`prestage: ${s}, stopping (send it again to stop at once)`);
      resolve(s);
      return;
    }
    ctx.err(`prestage: ${s} again, exiting without a clean stop`);
    process.exit(130);
  };
  for (const s of signals) process.on(s, onSignal);
  return { signal, dispose: () => signals.forEach((s) => process.off(s, onSignal)) };
}

const NBD_TLS_NOTE = {
  psk: ' (TLS-PSK: prestage host key HOST --out FILE)',
  x509: ' (TLS X.509: a host shows a client certificate of the CA whose CN is its id)',
  off: ' (no TLS)',
} as const;

export function serveCommand(ctx: CliContext): CommandUnknownOpts {
  return new Command('serve')
    .description('run the prestage server: API, replenisher and exporter over one data directory')
    .option('--data <dir>', 'data directory (default $PRESTAGE_DATA or ~/.local/share/prestage)')
    .option('--listen <host:port>', 'address of the HTTP API (default $PRESTAGE_LISTEN or 127.0.0.1:7480)')
    .option('--db <url>', 'PostgreSQL for the state, postgres://user@host/db (default $PRESTAGE_DB; none: SQLite in the data directory)')
    .option('--db-schema <name>', 'with --db: a schema of its own in that database')
    .option('--instance-name <name>', 'this instance\'s name among those sharing a --db state (default $PRESTAGE_INSTANCE_NAME or host:pid)')
    .option('--lease-ttl <duration>', 'with several instances: a silent instance\'s pools pass to another after this long, 1s to 10m (default 5s)')
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent (default $PRESTAGE_LOG_LEVEL or info)')
    .option('--pool-min <n>', 'min spares of the pool a newly imported name gets (default 1)', count)
    .option('--pool-max <n>', 'max spares of that pool (default 8)', count)
    .option('--copy-concurrency <n>', 'copies made at once over all pools (default 2)', positive)
    .option('--copy-rate <size>', 'cap on the disk bandwidth of all copies together, per second, e.g. 200MiB (default none)')
    .option('--template-builds <n>', 'template builds run at once over all templates, 1 to 64 (default 2)', positive)
    .option('--retention <duration>', 'how long events and gone copies are kept, e.g. 30d, 12h (default 30d)')
    .option('--pool-budget <copies|size>', 'cap on all pools\' spares together, e.g. 800 or 500GiB (default none)')
    .addOption(new Option('--driver <kind>', 'where images and copies live: file (the data directory) or rbd (a Ceph pool; with --ceph-conf and --ceph-pool); default $PRESTAGE_DRIVER or file').choices(['file', 'rbd'] as const))
    .option('--ceph-conf <file>', 'with --driver rbd: the ceph.conf naming the monitors and the keyring (default $PRESTAGE_CEPH_CONF)')
    .option('--ceph-pool <name>', 'with --driver rbd: the RBD pool images and copies go to (default $PRESTAGE_CEPH_POOL)')
    .option('--ceph-id <user>', 'with --driver rbd: the Ceph user, client.USER (default $PRESTAGE_CEPH_ID or admin)')
    .addOption(new Option('--reflink <mode>', 'clone with reflink where the filesystem can (auto) or always copy bytes (never)').choices(['auto', 'never'] as const))
    .addOption(
      new Option('--exporter <kind>', 'how hosts reach their copies: nbd (built-in NBD server), iscsi (a tgtd it runs), both (each host by its record, default nbd) or path (local file); default nbd').choices([
        'nbd',
        'iscsi',
        'both',
        'path',
      ] as const),
    )
    .option('--iscsi-portal <host:port>', 'with --exporter iscsi|both: the iSCSI portal tgtd listens on (default 0.0.0.0:3260)')
    .option('--iscsi-mutual-chap', 'hosts added from now on get mutual CHAP: the target proves itself to them too')
    .option('--boot-networks <cidr,...>', 'networks GET /v1/boot/ipxe answers (e.g. 10.0.0.0/24); default none: the endpoint refuses everyone')
    .option('--nbd-listen <host:port>', 'address of the NBD server (default $PRESTAGE_NBD_LISTEN or 0.0.0.0:10809)')
    .option('--nbd-advertise <host>', 'address put into the nbds:// URIs and iSCSI portals hosts get (default: the listen address, or the first IPv4)')
    .addOption(new Option('--nbd-tls <mode>', 'psk: TLS-PSK, one key per host (default); x509: client certificates, CN = host id; off: plaintext, no access control').choices(['psk', 'x509', 'off'] as const))
    .option('--nbd-tls-dir <dir>', 'with --nbd-tls x509: ca-cert.pem, server-cert.pem, server-key.pem (default $PRESTAGE_NBD_TLS_DIR)')
    .option('--tls-cert <file>', 'PEM certificate (chain) for HTTPS on the API; with --tls-key')
    .option('--tls-key <file>', 'PEM private key for HTTPS on the API')
    .option('--insecure-http', 'allow plain HTTP on an address beyond loopback (tokens cross the network in clear)')
    .addOption(new Option('--log-format <format>', 'pretty: readable lines; json: one JSON object per line (default: pretty on a terminal, else json)').choices(['pretty', 'json'] as const))
    .option('--json', 'the same as --log-format json')
    .option('--import-dir <dir>', 'a directory admins may import image files from by server path (repeatable; default none)', (v: string, prev: string[] = []) => [...prev, v])
    .action(async (opts) => {
      // Loaded here so client commands do not pay for the server's modules.
      const { PrestageApp, compileConfig, defaultLogFormat, makeLogger } = await import('../../app/index.js');
      const config = compileConfig(
        {
          dataDir: opts.data,
          listen: opts.listen,
          logLevel: opts.logLevel,
          poolDefaultMin: opts.poolMin,
          poolDefaultMax: opts.poolMax,
          copyConcurrency: opts.copyConcurrency,
          copyRate: opts.copyRate,
          templateBuilds: opts.templateBuilds,
          retention: opts.retention,
          poolBudget: opts.poolBudget,
          reflink: opts.reflink,
          driver: opts.driver,
          cephConf: opts.cephConf,
          cephPool: opts.cephPool,
          cephId: opts.cephId,
          exporter: opts.exporter,
          iscsiPortal: opts.iscsiPortal,
          iscsiMutualChap: opts.iscsiMutualChap === true,
          bootNetworks: opts.bootNetworks,
          nbdListen: opts.nbdListen,
          nbdAdvertise: opts.nbdAdvertise,
          nbdTls: opts.nbdTls,
          nbdTlsDir: opts.nbdTlsDir,
          tlsCert: opts.tlsCert,
          tlsKey: opts.tlsKey,
          insecureHttp: opts.insecureHttp === true,
          importDirs: opts.importDir ?? [],
          db: opts.db,
          dbSchema: opts.dbSchema,
          instanceName: opts.instanceName,
          leaseTtl: opts.leaseTtl,
        },
        ctx.io.env,
      );
      const app = new PrestageApp(config, makeLogger(config.logLevel, opts.json ? 'json' : (opts.logFormat ?? defaultLogFormat())));
      const { signal, dispose } = firstSignal(ctx);
      try {
        try {
          await app.start();
        } catch (e) {
          const code = errnoCode(e);
          // Node's listen errors name the address that failed: the API's or the NBD server's.
          const failed = e instanceof Error && 'port' in e && 'address' in e ? `${String(e.address)}:${String(e.port)}` : undefined;
          const listen = failed ?? `${config.listen.host}:${config.listen.port}`;
          if (code === 'EADDRINUSE') throw new UnavailableError(`cannot listen on ${listen}: the address is in use (another prestage serve?)`, {}, { cause: e });
          if (code === 'EACCES' || code === 'EADDRNOTAVAIL') throw new UnavailableError(`cannot listen on ${listen}: ${code}`, {}, { cause: e });
          throw e;
        }
        ctx.err(`prestage serving on ${config.apiTls ? 'https' : 'http'}://${app.address} (data ${config.dataDir})`);
        if (app.exporterAddress !== undefined) ctx.err(`NBD exports on ${app.exporterAddress}${NBD_TLS_NOTE[config.nbdTls]}`);
        await signal;
        await app.stop();
        ctx.err('prestage stopped');
      } finally {
        dispose();
      }
      setTimeout(() => process.exit(), EXIT_GRACE_MS).unref();
    });
}
