#!/bin/sh
# Runs scripts/probes/exit_config.c under each configuration, interleaved,
# ROUNDS times, and prints the median microseconds per access of each.
# Usage: scripts/probes/exit_config_table.sh [ROUNDS] [N] [TARGET] [CONFIGS...]
# (a config is one quoted string of options; the default set is below).
set -eu
dir=$(dirname "$0")
bin=${TMPDIR:-/tmp}/exit_config.$$
cc -O2 -Wall -o "$bin" "$dir/exit_config.c"
trap 'rm -f "$bin" "$bin".out' EXIT
rounds=${1:-5}
n=${2:-5000}
target=${3:-pio}
[ $# -gt 3 ] && shift 3 || set -- "base" "cpuid" "tss" "syncregs" "dirty" "usermsr" \
    "sigmask" "pin" "mem=128" "irqchip=split" "irqchip=full" "window"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
: > "$bin".out
r=0
while [ $r -lt "$rounds" ]; do
    for cfg in "$@"; do
        opts=$cfg
        [ "$cfg" = base ] && opts=
        # shellcheck disable=SC2086
        us=$("$bin" "$target" n="$n" $opts | sed 's/.*, \([0-9.]*\) us each/\1/')
        printf '%s\t%s\n' "$cfg" "$us" >> "$bin".out
    done
    r=$((r + 1))
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-22s %s\n' "config ($target)" "median us/access over $rounds rounds"
for cfg in "$@"; do
    grep -F "$(printf '%s\t' "$cfg")" "$bin".out | cut -f2 | sort -g |
        awk -v c="$cfg" '{v[NR]=$1} END {printf "%-22s %.1f  (min %.1f, max %.1f)\n", c, v[int((NR+1)/2)], v[1], v[NR]}'
done
