#!/bin/sh
# Copyright 2026 The ft-cloud-hypervisor authors.
# SPDX-License-Identifier: Apache-2.0
#
# What dropping KVM's cached translations after each applied checkpoint
# costs a replay (issue 11): records one Linux boot to the shell (ended by
# `poweroff -f` typed at the prompt), then replays it RUNS times with each
# of two VMM binaries, alternating, and prints the replay wall times.
# Build the "without" binary yourself (e.g. with the call in
# `apply_checkpoint` disabled); a boot to the shell replays either way.
# With STRACE=1, one more replay with the first binary under strace counts
# the KVM_SET_USER_MEMORY_REGION calls and their time.
#
# usage: scripts/probes/drop_translations_cost.sh WITH_BIN WITHOUT_BIN [RUNS]
set -eu
with=$1 without=$2 runs=${3:-3}
root=$(cd "$(dirname "$0")/../.." && pwd)
eval "$("$root/scripts/build-linux-guest")"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cmdline="console=ttyS0 clearcpuid=4,158,306,308,151 noxsave norandmaps"
vm() {
    "$1" --kernel "$VMLINUX" --initramfs "$INITRAMFS" --cmdline "$cmdline" \
        --memory size=256M --serial tty --console off \
        --fault-tolerance "mode=$2,log=$dir/boot.ftlog" -v
}
# Record: type `poweroff -f` once the prompt is there.
mkfifo "$dir/in"
(vm "$with" record <"$dir/in" >"$dir/rec.out" 2>"$dir/rec.err") &
exec 3>"$dir/in"
until grep -q '/ # ' "$dir/rec.out" 2>/dev/null; do sleep 0.5; done
printf 'poweroff -f\n' >&3
wait
exec 3>&-
echo "log: $(du -m "$dir/boot.ftlog" | cut -f1) MB; $(grep -o '[0-9]* checkpoints ([0-9]* pages' "$dir/rec.err")"
for i in $(seq "$runs"); do
    for bin in "$with" "$without"; do
        start=$(date +%s.%N)
        vm "$bin" replay </dev/null >"$dir/rep.out" 2>"$dir/rep.err" || echo "replay failed: $bin"
        end=$(date +%s.%N)
        same=$(cmp -s "$dir/rec.out" "$dir/rep.out" && echo identical || echo DIFFERENT)
        printf '%s replay %.1f s (%s)\n' "$bin" "$(echo "$end - $start" | bc)" "$same"
    done
done
if [ "${STRACE:-0}" = 1 ]; then
    strace -f -T -e trace=ioctl -o "$dir/strace" sh -c \
        "\"$with\" --kernel \"$VMLINUX\" --initramfs \"$INITRAMFS\" --cmdline \"$cmdline\" --memory size=256M --serial tty --console off --fault-tolerance mode=replay,log=$dir/boot.ftlog </dev/null >/dev/null 2>&1"
    grep KVM_SET_USER_MEMORY_REGION "$dir/strace" | sed -n 's/.*<\([0-9.]*\)>$/\1/p' |
        awk '{n++; s+=$1} END {printf "KVM_SET_USER_MEMORY_REGION: %d calls, %.1f ms in all, %.0f us each\n", n, s*1000, n ? s/n*1e6 : 0}'
fi
