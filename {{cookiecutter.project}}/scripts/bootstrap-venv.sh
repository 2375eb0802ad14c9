#!/usr/bin/env bash
# Create (or update) a virtualenv with pinned requirements, fast:
#   [EDITABLE=dir] bootstrap-venv.sh VENV REQUIREMENTS...
# uv does the work: the one on PATH (or UV=/path/to/uv), else a pinned uv
# kept once per user in ~/.cache/parallel-stacks (installed from PyPI the
# first time, ~3 s; every later worktree reuses it). Plain pip is the
# fallback when uv cannot be had (UV=none forces it). Says what it is doing:
# the first `make` in a fresh clone otherwise sits silent for seconds.
set -euo pipefail
venv=$1; shift
python=${BOOTSTRAP_PYTHON:-python3}
uv_version=0.13.9
say() { printf 'setup: %s\n' "$*" >&2; }

uv=${UV:-}
if [[ -z $uv ]]; then
  uv=$(command -v uv || true)
fi
if [[ -z $uv ]]; then
  home=${XDG_CACHE_HOME:-$HOME/.cache}/parallel-stacks/uv-$uv_version
  if [[ ! -x $home/bin/uv ]]; then
    say "fetching uv $uv_version into $home (once per user; UV=none skips it)"
    tmp=$home.tmp.$$
    if "$python" -m pip install -q --disable-pip-version-check --target "$tmp" "uv==$uv_version" >/dev/null 2>&1; then
      rm -rf "$home" && mv "$tmp" "$home"
    else
      rm -rf "$tmp"
      say "uv could not be installed; using pip"
    fi
  fi
  [[ -x $home/bin/uv ]] && uv=$home/bin/uv
fi
[[ $uv == none ]] && uv=

reqs=()
for req in "$@"; do reqs+=(-r "$req"); done
[[ -n ${EDITABLE:-} ]] && reqs+=(-e "$EDITABLE")  # the project's helper package, editable

if [[ ! -x $venv/bin/python ]]; then
  say "creating $venv (first run only) and installing $* ..."
  if [[ -n $uv ]]; then
    "$uv" venv -q --python "$python" "$venv"
  else
    "$python" -m venv "$venv"
  fi
else
  say "updating $venv from $* ..."
fi

if [[ -n $uv ]]; then
  "$uv" pip install -q --python "$venv/bin/python" "${reqs[@]}"
else
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${reqs[@]}"
fi
say "$venv ready ($([[ -n $uv ]] && echo uv || echo pip))"
