#!/usr/bin/env bash
# Installs everything prestage needs on a fresh Debian machine (run as root): the storage
# tools from apt, then the npm dependencies (with their native builds). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-utils          # qemu-img: qcow2 → raw on import; NBD client checks
  nbdkit libnbd-bin python3-libnbd  # nbdinfo, nbdcopy, nbdsh: real NBD clients for the exporter's tests
  fio                               # npm run bench -- nbd: 4 KiB random reads through fio's nbd engine
  tgt libiscsi-bin                  # the iSCSI exporter runs its own tgtd; iscsi-ls/-inq/-readcapacity16 test it
  e2fsprogs fdisk mtools xorriso    # image customization (templates)
  xfsprogs btrfs-progs              # reflink filesystems for tests (loop-mounted)
  util-linux coreutils              # mount, losetup, fallocate
  python3 make g++                  # native builds of npm addons (better-sqlite3)
  qemu-system-x86 linux-image-cloud-amd64 busybox-static  # test/e2e/boot.test.ts: a host really boots (tcg) from its NBD copy
  kmod                              # … modprobe --show-depends lists the virtio modules its initramfs loads
  syslinux syslinux-common ipxe-qemu  # test/e2e/ipxe-boot.test.ts: a BIOS golden (syslinux, mbr.bin) network-booted by qemu's iPXE ROM over iSCSI
  open-iscsi                        # … its initramfs logs in again from Linux with iscsistart (the iBFT iPXE leaves)
  curl                              # the README's template section fetches a host's documents
  postgresql                        # the tests run the store and services on PostgreSQL too (serve --db); npm start needs none
  ceph-mon ceph-osd ceph-mgr ceph-common librbd1  # test/helpers/ceph.ts: a single-node Ceph cluster for the RBD driver's tests
  qemu-block-extra                  # npm run bench -- nbd --device rbd: qemu-nbd serves rbd: images (block-rbd.so)
  chromium                          # test/web/: the dashboard's browser tests (playwright-core drives Debian's build)
  bash-completion zsh               # test/cli/completion.test.ts: the completion scripts `prestage completion` writes, loaded by both shells
)

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (apt-get needs it), e.g. sudo $0" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The tests' PostgreSQL: 127.0.0.1:5432, database `test`, trust for the local postgres user.
# An installation that answers there already is left as it is.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  cluster=$(pg_lsclusters -h 2>/dev/null | awk 'NR==1 {print $1" "$2}')
  if [ -n "$cluster" ]; then
    read -r version name <<<"$cluster"
    hba=/etc/postgresql/$version/$name/pg_hba.conf
    grep -q '^host all postgres 127.0.0.1/32 trust' "$hba" || sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
    pg_ctlcluster "$version" "$name" start || pg_ctlcluster "$version" "$name" reload
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 || psql -h 127.0.0.1 -U postgres -qc 'CREATE DATABASE test'
else
  echo "install.sh: PostgreSQL does not answer on 127.0.0.1:5432; the tests that need it will say so" >&2
fi

if ! command -v node >/dev/null; then
  echo "install.sh: Node.js 20 or newer is required (Debian 12's own nodejs is 18: use NodeSource or nvm)" >&2
  exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "install.sh: Node.js 20 or newer is required, found $(node -v)" >&2
  exit 1
fi

# package.json's allowScripts approves the native builds (better-sqlite3, koffi, esbuild),
# so npm 11 runs them instead of skipping them silently. Skipped when node_modules was installed
# from this very lock file (a second start takes seconds, not minutes).
stamp=node_modules/.prestage-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && node -e "new (require('better-sqlite3'))(':memory:').close()" 2>/dev/null; then
  echo "install.sh: node_modules matches package-lock.json; npm ci skipped" >&2
else
  npm ci --no-audit --no-fund --loglevel=error
  node -e "new (require('better-sqlite3'))(':memory:').close()" || { echo "install.sh: better-sqlite3's native module did not build" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
# The CLI and the server run compiled JavaScript from dist/, the dashboard its bundle in dist/web/;
# built again only when a source (or the build's own settings) changed since the last build.
if [ -f dist/.built ] && [ -f dist/web/index.html ] && [ -z "$(find src web tsconfig.json tsconfig.build.json package.json -newer dist/.built -print -quit)" ]; then
  echo "install.sh: dist/ is up to date" >&2
else
  npm run build --silent
fi
echo "install.sh: ready" >&2
