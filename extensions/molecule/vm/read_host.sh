# shellcheck shell=bash
# What one VM host shows (read directly, not through the collection's modules):
#   kernel RUNNING NEWEST-INSTALLED HOST-UPTIME
#   ctr NAME PROCS TOKEN COUNTER MARKER MEMORY.MAX PIDS.MAX CPU.MAX(2 words) ADDRESS UPTIME
# UPTIME is /proc/uptime as the container's own loop last read it (its time namespace).
set -euo pipefail
newest="$(find /boot -name 'vmlinuz-*' -printf '%f\n' | sed 's/^vmlinuz-//' | sort -V | tail -n1)"
echo "kernel $(uname -r) $newest $(cut -d' ' -f1 /proc/uptime)"
cd "$ROOT/containers" 2>/dev/null || exit 0
for c in vmc*; do
    [ -d "$c" ] || continue
    d="/sys/fs/cgroup/ctrhost/$HOST/$c"
    n="$(wc -l < "$d/cgroup.procs" 2>/dev/null || echo 0)"
    ip="$(ip -n "ctrhost-$c" -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}' | cut -d/ -f1)"
    if [ -n "$ip" ] && ! ping -c 1 -W 3 "$ip" >/dev/null 2>&1; then ip="no-answer-from-$ip"; fi
    echo "ctr $c $n $(cat "$c/rootfs/counter" 2>/dev/null || echo - 0) $(cat "$c/rootfs/marker" 2>/dev/null || echo -)" \
         "$(cat "$d/memory.max" 2>/dev/null || echo -) $(cat "$d/pids.max" 2>/dev/null || echo -)" \
         "$(cat "$d/cpu.max" 2>/dev/null || echo - -) ${ip:-none} $(cat "$c/rootfs/uptime" 2>/dev/null || echo -1)"
done
