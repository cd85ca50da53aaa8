#!/usr/bin/env bash
# make deps: installs what `make run` and `make test` need and lack, as
# listed in deps.txt beside this script. Idempotent: with everything there
# it installs nothing and says nothing. As root it installs the missing
# Debian packages with apt-get and says which; without root, or without
# apt-get, it names them and fails.
set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
list=$here/deps.txt
missing=() pkgs=()
while read -r cmd pkg _; do
  case $cmd in '' | '#'*) continue ;; esac
  command -v "$cmd" >/dev/null && continue
  missing+=("$cmd")
  [[ " ${pkgs[*]} " == *" $pkg "* ]] || pkgs+=("$pkg")
done <"$list"
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$EUID" -ne 0 ]; then
  echo "make deps: missing ${missing[*]}: run make as root, which installs them, or as root: apt-get install ${pkgs[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "make deps: missing ${missing[*]}, and there is no apt-get: install the Debian packages ${pkgs[*]} or their equivalents" >&2
  exit 1
fi
echo "make deps: installing ${pkgs[*]} (for ${missing[*]})"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
