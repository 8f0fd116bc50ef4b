#!/usr/bin/env bash
# Builds {{name}}.wasm from app.py with componentize-py (requirements.txt pins it).
#
# Needs the contract (wit/) and verbhost's Python SDK (verbhost_sdk/). They are taken from
# this directory when present, else from the verbhost checkout VERBHOST_ROOT names (by default
# the one `verbhost plugin new` was built from: {{root}}).
# componentize-py is COMPONENTIZE_PY, else on PATH, else VERBHOST_ROOT/target/py-venv
# (`guest/sdk-py/build.sh --install` there installs it), else install it yourself:
#   python3 -m venv .venv && .venv/bin/pip install -r requirements.txt
#
# --stub-wasi is required: without it the component imports WASI files, sockets and clocks,
# and verbhost refuses it at load.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="${VERBHOST_ROOT:-{{root}}}"
wit="$here/wit"
[[ -d "$wit" ]] || wit="$root/wit"
sdk="$here"
[[ -d "$here/verbhost_sdk" ]] || sdk="$root/guest/sdk-py"
if [[ ! -f "$wit/plugin.wit" || ! -d "$sdk/verbhost_sdk" ]]; then
  echo "wit/ and verbhost_sdk/ not found here; set VERBHOST_ROOT to a verbhost checkout" >&2
  exit 3
fi
tool="${COMPONENTIZE_PY:-}"
if [[ -z "$tool" ]]; then
  for candidate in "$here/.venv/bin/componentize-py" "$(command -v componentize-py || true)" \
    "$root/target/py-venv/bin/componentize-py"; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then tool="$candidate"; break; fi
  done
fi
if [[ -z "$tool" ]]; then
  echo "componentize-py not found; see the comment at the top of $0" >&2
  exit 3
fi
"$tool" -d "$wit" -w checked-verb-plugin componentize app -p "$here" -p "$sdk" --stub-wasi \
  -o "$here/{{name}}.wasm.tmp" >&2
mv -f "$here/{{name}}.wasm.tmp" "$here/{{name}}.wasm"
echo "$here/{{name}}.wasm"
