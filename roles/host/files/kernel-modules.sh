#!/bin/sh
# Make sure the kernel has each module named on the command line, loading it when
# allowed. Prints one line per module: "<name> present|loaded|builtin|missing".
#   kernel-modules.sh [--no-load] MODULE...
# A module is "builtin" when the kernel has the feature without a loadable module
# (found by creating a throw-away link, qdisc or by /proc/filesystems).
load=1
if [ "${1:-}" = "--no-load" ]; then load=0; shift; fi
PATH="$PATH:/usr/sbin:/sbin"
probe_link() {
    # $1: link type; the probe link lives for an instant in this network namespace.
    dev="ctrprb$$"
    case "$1" in
        veth) ip link add "$dev" type veth peer name "${dev}p" 2>/dev/null || return 1 ;;
        *) ip link add "$dev" type "$1" 2>/dev/null || return 1 ;;
    esac
    ip link del "$dev" 2>/dev/null
    return 0
}
probe_qdisc() {
    dev="ctrprb$$"
    ip link add "$dev" type veth peer name "${dev}p" 2>/dev/null || return 1
    rc=0
    tc qdisc add dev "$dev" root handle 1: "$1" 2>/dev/null || rc=1
    ip link del "$dev" 2>/dev/null
    return $rc
}
probe() {
    case "$1" in
        overlay) grep -qw overlay /proc/filesystems ;;
        veth|bridge|ifb|dummy|macvlan|ipvlan|vxlan) probe_link "$1" ;;
        sch_*) probe_qdisc "${1#sch_}" ;;
        *) return 1 ;;
    esac
}
for m in "$@"; do
    if [ -d "/sys/module/$m" ]; then
        echo "$m present"
        continue
    fi
    if [ "$load" = 1 ] && command -v modprobe >/dev/null 2>&1 && modprobe "$m" 2>/dev/null; then
        if [ -d "/sys/module/$m" ]; then echo "$m loaded"; else echo "$m builtin"; fi
        continue
    fi
    if probe "$m"; then
        echo "$m builtin"
    else
        echo "$m missing"
    fi
done
exit 0
