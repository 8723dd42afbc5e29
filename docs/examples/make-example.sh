#!/bin/sh
# Builds the bundled example chain with real qemu-img and captures its
# `qemu-img info --output=json --backing-chain` as broken-chain.json.
#   base.qcow2 <- mid.qcow2 <- top.qcow2
#   daily     in every layer, recording              -> valid
#   weekly    in top and base, mid lacks it (a gap)  -> bitmap-contiguous
#   paused    disabled in mid                        -> bitmap-recording
#   crashed   left in-use in mid by a killed writer  -> bitmap-consistent
#   old       only in base                           -> bitmap-in-top
# Usage: make-example.sh [OUTPUT.json]   (needs qemu-img and qemu-io)
set -eu
out=$(realpath "${1:-$(dirname "$0")/broken-chain.json}")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
qemu-img create -q -f qcow2 base.qcow2 64M
qemu-img bitmap --add base.qcow2 daily
qemu-img bitmap --add base.qcow2 weekly
qemu-img bitmap --add base.qcow2 old
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
qemu-img bitmap --add mid.qcow2 crashed
# A writer killed mid-write leaves every loaded bitmap of mid.qcow2 in-use.
qemu-io -f qcow2 -c 'write 0 64k' -c abort mid.qcow2 >/dev/null 2>&1 || true
qemu-img bitmap --add mid.qcow2 daily
qemu-img bitmap --add --disable mid.qcow2 paused
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
for name in daily weekly paused crashed; do qemu-img bitmap --add top.qcow2 "$name"; done
qemu-img info --output=json --backing-chain top.qcow2 > "$out"
