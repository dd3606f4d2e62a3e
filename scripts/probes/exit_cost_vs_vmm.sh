#!/bin/sh
# One CPL3 MMIO access that leaves the kernel, three ways, interleaved ROUNDS
# times: the bare probe (exit_config.c, nothing but KVM_RUN in a loop), the
# probe with KVM handling the access in the kernel (an APIC read with an
# in-kernel LAPIC: what QEMU's figure in scripts/bench measures), and our VMM
# on the test guest's workload=exits (its boot subtracted). Median us each.
# Usage: scripts/probes/exit_cost_vs_vmm.sh VMM TEST_GUEST_ELF [ROUNDS] [N]
set -eu
vmm=$1 guest=$2 rounds=${3:-5} n=${4:-5000}
dir=$(dirname "$0")
bin=${TMPDIR:-/tmp}/exit_config.$$
cc -O2 -Wall -o "$bin" "$dir/exit_config.c"
trap 'rm -f "$bin" "$bin".out' EXIT
now() { date +%s.%N; }
vmm_run() {
    t0=$(now)
    "$vmm" --kernel "$guest" --cmdline "workload=exits count=$1" --memory size=128M \
        --serial off --console off > /dev/null
    t1=$(now)
    echo "$t1 - $t0" | bc -l
}
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
: > "$bin".out
r=0
while [ $r -lt "$rounds" ]; do
    for what in probe-mmio probe-apic-in-kernel vmm; do
        case $what in
        probe-mmio) us=$("$bin" mmio n="$n" | sed 's/.*, \([0-9.]*\) us each/\1/') ;;
        probe-apic-in-kernel)
            us=$("$bin" apic irqchip=full n="$n" | sed 's/.*, \([0-9.]*\) us each/\1/') ;;
        vmm)
            base=$(vmm_run 0)
            full=$(vmm_run "$n")
            us=$(echo "($full - $base) / $n * 1000000" | bc -l) ;;
        esac
        printf '%s\t%s\n' "$what" "$us" >> "$bin".out
    done
    r=$((r + 1))
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for what in probe-mmio probe-apic-in-kernel vmm; do
    grep "^$what	" "$bin".out | cut -f2 | sort -g |
        awk -v c="$what" '{v[NR]=$1} END {printf "%-22s median %.1f us/access (min %.1f, max %.1f)\n", c, v[int((NR+1)/2)], v[1], v[NR]}'
done
