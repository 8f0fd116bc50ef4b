#!/usr/bin/env bash
# Builds Python verb plugins from source with componentize-py, pinned in requirements.txt.
#
#   guest/sdk-py/build.sh --install        # create target/py-venv and install the pinned tools
#   guest/sdk-py/build.sh [PLUGIN_DIR...]  # build each (default: guest/verb-py)
#
# A plugin directory holds `app.py`, whose class `Verb` implements the contract's `verb`
# export. It is built against wit/ with this SDK on the module path, into
# target/py-plugins/<directory name>.wasm.
#
# --stub-wasi is required: without it the component imports 25 WASI interfaces (files,
# sockets, clocks, ...) and verbhost refuses it at load. With it, it imports none.
#
# The tools live in a venv under target/ (not the user site): each checkout gets exactly the
# pinned version, `cargo clean` removes them with everything else built, and nothing is
# installed system-wide. COMPONENTIZE_PY overrides the tool's path.
set -euo pipefail
sdk="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$sdk/../.." && pwd)"
venv="$root/target/py-venv"
out="$root/target/py-plugins"

if [[ "${1:-}" == "--install" ]]; then
  python="${PYTHON:-python3}"
  if ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    "$python" -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$sdk/requirements.txt"
  "$venv/bin/componentize-py" --version
  exit 0
fi

tool="${COMPONENTIZE_PY:-$venv/bin/componentize-py}"
if [[ ! -x "$tool" ]]; then
  echo "componentize-py not found at $tool: run $0 --install (needs python3 and PyPI)" >&2
  exit 3
fi

mkdir -p "$out"
dirs=("$@")
[[ ${#dirs[@]} -eq 0 ]] && dirs=("$root/guest/verb-py")
for dir in "${dirs[@]}"; do
  dir="$(cd "$dir" && pwd)"
  name="$(basename "$dir")"
  # Write beside the output and rename, so a reader (a watched plugin directory) never sees
  # half a file.
  tmp="$out/.$name.wasm.tmp"
  "$tool" -d "$root/wit" -w checked-verb-plugin componentize app \
    -p "$dir" -p "$sdk" --stub-wasi -o "$tmp" >&2
  mv -f "$tmp" "$out/$name.wasm"
  echo "$out/$name.wasm"
done
