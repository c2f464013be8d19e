#!/usr/bin/env bash
# Installs everything prestage needs on a fresh Debian machine (run as root): the storage
# tools from apt, then the npm dependencies (with their native builds). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-utils          # qemu-img: qcow2 → raw on import; NBD client checks
  nbdkit libnbd-bin python3-libnbd  # nbdinfo, nbdcopy, nbdsh: real NBD clients for the exporter's tests
  fio                               # npm run bench -- nbd: 4 KiB random reads through fio's nbd engine
  e2fsprogs fdisk mtools xorriso    # image customization (templates)
  xfsprogs btrfs-progs              # reflink filesystems for tests (loop-mounted)
  util-linux coreutils              # mount, losetup, fallocate
  python3 make g++                  # native builds of npm addons (better-sqlite3)
  qemu-system-x86 linux-image-cloud-amd64 busybox-static  # test/e2e/boot.test.ts: a host really boots (tcg) from its NBD copy
  kmod                              # … modprobe --show-depends lists the virtio modules its initramfs loads
  curl                              # the README's template section fetches a host's documents
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
# The CLI and the server run compiled JavaScript from dist/; built again only when a source
# (or the build's own settings) changed since the last build.
if [ -f dist/.built ] && [ -z "$(find src tsconfig.json tsconfig.build.json package.json -newer dist/.built -print -quit)" ]; then
  echo "install.sh: dist/ is up to date" >&2
else
  npm run build --silent
fi
echo "install.sh: ready" >&2
