#!/bin/sh
# Installs what zlora needs from Debian's packages when run as root; otherwise prints the command.
# Called by `make test` and `make demo`, so it must be quick when everything is already there.
PKGS="build-essential clang libclang-rt-14-dev libopenblas-dev liblapacke-dev libcjson-dev libdnnl-dev libpcre2-dev libutf8proc-dev libpng-dev libjpeg-dev libwebp-dev python3-numpy"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# node and npm (the reference tokenizer): any install will do (the image may ship NodeSource's)
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -z "$missing" ] && exit 0
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
