#!/usr/bin/env bash
# Real footage for the source tests: Debian's opencv-doc package ships examples/data with
# vtest.avi (people walking), Megamind.avi and Megamind_bugy.avi (a damaged copy).
#
#   bash tools/fetch_footage.sh            # prints the examples/data directory on stdout
#
# Idempotent: a second run finds the cache and only prints the path. Only examples/data is kept
# (about 22 MB; the whole package unpacks to about 300 MB). Progress and errors go to stderr; the
# exit status is non-zero when the footage cannot be had (no apt-get, no network, no package).
#
# Cache: $LVM_FOOTAGE_DIR, else ${XDG_CACHE_HOME:-~/.cache}/lvm-edge/footage.
set -euo pipefail

cache="${LVM_FOOTAGE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lvm-edge/footage}"
data="$cache/opencv-doc/examples/data"

say() { echo "fetch_footage: $*" >&2; }

if [[ -f "$data/vtest.avi" && -f "$data/Megamind_bugy.avi" ]]; then
    echo "$data"
    exit 0
fi

for tool in apt-get dpkg; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        say "$tool not found (needs a Debian/Ubuntu host); cannot fetch opencv-doc"
        exit 2
    fi
done

mkdir -p "$cache"
# Tests may run this from several processes at once: one fetch, the others wait for it.
exec 9>"$cache/.lock"
if command -v flock >/dev/null 2>&1; then
    flock -w 600 9 || { say "timed out waiting for another fetch ($cache/.lock)"; exit 1; }
fi
if [[ -f "$data/vtest.avi" && -f "$data/Megamind_bugy.avi" ]]; then
    echo "$data"
    exit 0
fi

work="$(mktemp -d "$cache/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

download() {
    # apt-get download writes into the current directory and needs no root; as root it warns
    # that the _apt sandbox cannot write here, which is harmless.
    (cd "$work" && apt-get download -q opencv-doc >"$work/apt.log" 2>&1)
}

if ! download; then
    # A fresh container has no package lists: refresh them (needs root or password-less sudo).
    say "apt-get download failed; running apt-get update and trying again"
    if [[ $(id -u) -eq 0 ]]; then
        apt-get update -q >"$work/update.log" 2>&1 || say "apt-get update failed: $(tail -n 1 "$work/update.log")"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n apt-get update -q >"$work/update.log" 2>&1 || say "apt-get update failed: $(tail -n 1 "$work/update.log")"
    else
        say "not root and no password-less sudo: cannot run apt-get update"
    fi
    if ! download; then
        say "apt-get download opencv-doc failed: $(tail -n 1 "$work/apt.log")"
        exit 1
    fi
fi

deb="$(ls "$work"/opencv-doc_*.deb 2>/dev/null | head -n 1)"
if [[ -z "$deb" ]]; then
    say "apt-get reported success but no opencv-doc_*.deb was written"
    exit 1
fi
dpkg -x "$deb" "$work/x"
src="$work/x/usr/share/doc/opencv-doc/examples/data"
if [[ ! -f "$src/vtest.avi" ]]; then
    say "$(basename "$deb") has no examples/data/vtest.avi"
    exit 1
fi

# Stage next to the final place and rename, so a reader never sees a half-copied directory.
mkdir -p "$cache/opencv-doc/examples"
stage="$cache/opencv-doc/examples/.data.$$"
rm -rf "$stage"
mv "$src" "$stage"
echo "$(basename "$deb")" >"$stage/.source-package"
rm -rf "$data"
mv "$stage" "$data"
say "unpacked $(basename "$deb") -> $data"
echo "$data"
