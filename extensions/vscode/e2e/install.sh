#!/usr/bin/env bash
# Installs the end-to-end harness (code-server, a real VS Code in the browser, and playwright-core) into
# extensions/vscode/e2e/node_modules, with no download outside the npm registry, and does nothing when
# node_modules already matches package-lock.json and this script (a stamp holds their hash, not a
# timestamp, so a node_modules restored from a CI cache next to a fresh clone is kept). `make test` runs it.
#
# What an offline install of code-server 4.99.4 needs, step by step:
# - as root, code-server's postinstall refuses to run unless npm_config_unsafe_perm=true;
# - that postinstall runs `npm install` in lib/vscode, where @vscode/ripgrep downloads `rg` from GitHub
#   unless its download cache ($TMPDIR/vscode-ripgrep-cache-<version>/<asset>) already holds it: the
#   cache is filled from the `rg` that the npm package @vscode/ripgrep-linux-<arch> ships;
# - node-pty's postinstall runs `npx node-gyp`, which asks before fetching node-gyp (npm_config_yes);
# - argon2 and kerberos find no prebuilt binary offline and compile (kerberos needs libkrb5-dev), with
#   the Node headers installed next to `node` (node-gyp would download them otherwise).
set -euo pipefail
cd "$(dirname "$0")"

key=$( (sha256sum package-lock.json install.sh && node --version && uname -sm) | sha256sum | cut -d' ' -f1)
stamp=node_modules/.superpie-e2e-stamp
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
  exit 0
fi
started=$(date +%s)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# half an install is none: the test then skips (or, as root, fails) instead of driving a broken one
trap 'rm -rf node_modules' ERR

# 1. Every package in place, no install scripts yet.
npm ci --ignore-scripts --no-audit --no-fund

# 2. ripgrep's download cache, as @vscode/ripgrep (the version code-server's lib/vscode pins) expects it.
case "$(uname -m)" in
  x86_64) arch=x64 target=x86_64-unknown-linux-musl ;;
  aarch64) arch=arm64 target=aarch64-unknown-linux-musl ;;
  *) arch='' target='' ;;
esac
rg_pkg=node_modules/@vscode/ripgrep-linux-$arch/bin/rg
if [ -n "$arch" ] && [ -x "$rg_pkg" ]; then
  rg_version=$(node -e "const s = require('./node_modules/code-server/lib/vscode/npm-shrinkwrap.json');
    process.stdout.write(s.packages['node_modules/@vscode/ripgrep'].version)")
  rg_asset_version=v13.0.0-10 # the ripgrep build @vscode/ripgrep 1.15.x fetches (its lib/postinstall.js)
  mkdir -p "$tmp/vscode-ripgrep-cache-$rg_version" "$tmp/rg"
  cp "$rg_pkg" "$tmp/rg/rg"
  tar czf "$tmp/vscode-ripgrep-cache-$rg_version/ripgrep-$rg_asset_version-$target.tar.gz" -C "$tmp/rg" rg
else
  echo "warning: no packaged rg for $(uname -m): @vscode/ripgrep will try to download it" >&2
fi

# 3. The install scripts (code-server's postinstall installs lib/vscode from its npm-shrinkwrap.json).
node_bin=$(dirname "$(readlink -f "$(command -v node)")")
if [ -z "${npm_config_nodedir:-}" ] && [ -f "$node_bin/../include/node/node.h" ]; then
  export npm_config_nodedir
  npm_config_nodedir=$(cd "$node_bin/.." && pwd)
fi
if [ "$(id -u)" = 0 ]; then
  export npm_config_unsafe_perm=true
fi
TMPDIR=$tmp npm_config_yes=true npm rebuild --no-audit --no-fund

XDG_CONFIG_HOME=$tmp XDG_DATA_HOME=$tmp node_modules/.bin/code-server --version >/dev/null # a smoke test
echo "$key" >"$stamp"
echo "installed the VS Code e2e harness in $(($(date +%s) - started)) s"
