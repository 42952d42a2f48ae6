#!/usr/bin/env bash
# Makes extensions/nvim/screenshot.png: Neovim in tmux with the plugin and the default model, ghost
# text shown after typing in examples/sample.py. Needs nvim, tmux and Pillow (the project's .venv has it).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd) # extensions/nvim
root=$(cd "$here/../.." && pwd)
server=${SUPERPIE:-$root/.venv/bin/superpie}
python=${PYTHON:-$root/.venv/bin/python}
session=superpie-shot-$$
work=$(mktemp -d)
trap 'tmux kill-session -t "$session" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir "$work/.git"
cp "$root/examples/sample.py" "$work/inventory.py"
cat >"$work/init.lua" <<LUA
vim.opt.rtp:prepend('$here')
vim.o.number = true
vim.o.laststatus = 2
vim.o.statusline = ' %f %= superpie: %{luaeval("require(\'superpie\').status()")} '
vim.cmd('highlight SuperpieGhost ctermfg=245 cterm=italic')
require('superpie').setup({ cmd = { '$server', 'serve' } })
LUA

tmux new-session -d -s "$session" -x 88 -y 26 -c "$work" "nvim -n -u $work/init.lua inventory.py"
wait_for() { # pattern, seconds
  for _ in $(seq $(($2 * 10))); do
    tmux capture-pane -t "$session" -p | grep -q -- "$1" && return 0
    sleep 0.1
  done
  echo "timed out waiting for '$1'" >&2
  tmux capture-pane -t "$session" -p >&2
  return 1
}
wait_for 'superpie: ready' 300
tmux send-keys -t "$session" '23G' 'A'
for key in t o t a l ' ' '+' '=' ' '; do # typed one key at a time, as a person would
  tmux send-keys -t "$session" -l "$key"
  sleep 0.08
done
wait_for 'total += .*item' 60
sleep 0.5
tmux capture-pane -t "$session" -e -p >"$work/screen.ansi"
"$python" "$here/tools/ansi_to_png.py" "$work/screen.ansi" "$here/screenshot.png" --cols 88
echo "wrote $here/screenshot.png"
