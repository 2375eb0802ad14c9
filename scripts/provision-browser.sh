#!/usr/bin/env bash
# Debian's Chromium for the named-URL browser test (tests/test_e2e.py), as the
# machine notes describe: /usr/bin/chromium, no download of a browser of its own.
set -euo pipefail
log() { printf 'provision-browser: %s\n' "$*" >&2; }
if command -v chromium >/dev/null 2>&1; then
  log "$(chromium --version 2>/dev/null | head -1)"
  exit 0
fi
command -v apt-get >/dev/null || { log "no apt-get: install Chromium yourself (the browser test needs it)"; exit 1; }
log "installing Debian's chromium (a minute or two)"
sudo_=""; [[ $(id -u) == 0 ]] || sudo_=sudo
$sudo_ apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends chromium >/tmp/provision-browser.log 2>&1 \
  || { log "apt-get install chromium failed; see /tmp/provision-browser.log"; exit 1; }
log "$(chromium --version 2>/dev/null | head -1)"
