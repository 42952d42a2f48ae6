#!/usr/bin/env bash
# Makes extensions/vscode/screenshot.png for the README: the default-model test of
# tests/extensions/test_vscode.py saves the page once the ghost text shows (examples/sample.py, after
# `total += `). Needs what `make test` installs (code-server, chromium, the built .vsix).
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
SUPERPIE_VSCODE_SCREENSHOT=$root/extensions/vscode/screenshot.png \
  .venv/bin/pytest -q tests/extensions/test_vscode.py -k default_model "$@"
echo "wrote $root/extensions/vscode/screenshot.png"
