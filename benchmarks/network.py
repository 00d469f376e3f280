# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet network on a 3-host lab, per mode of ``host_network``'s ``fleet`` (group ``network``).

For each mode (``routed``, ``overlay`` and, where the installed ``host_network`` offers it,
``bridged``) the lab's three hosts get the mode the way an operator gives it: a playbook with
the ``host`` role's network tasks and ``ctrhost_fleet_network``. Then, through the product's
network only:

* convergence: a prober outside every container host sends an ICMP echo every 10 ms to a
  busybox container while ``container_migrate`` moves it cold between hosts 1 and 2 (each
  repetition one move, the direction alternating). Per move: the longest time without a
  reply, the downtime ``container_migrate`` reports (freeze to running on the destination)
  and the difference, the time the rest of the network takes to reach the container again
  beyond the move's own outage. The prober runs on the lab's controller side (routed,
  bridged: the LAN) or, for the overlay (a subnet of its own that the LAN does not route),
  in host 3's own network namespace, whose bridge is a host of the segment.
* throughput: 256 MiB over one TCP connection from a container on host 2 to a container on
  host 1 (Python entering each container's network namespace, ``/run/netns/ctrhost-NAME``),
  and the same between the two hosts' own addresses, three times each way per repetition,
  interleaved, the best of each counting: MB/s and the ratio container/host.

Ours only: no peer has these modes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import fleet
import scenarios
import sides as sides_mod

REPO = sides_mod.REPO
MODES = ("routed", "overlay", "bridged")
BRIDGES = dict(routed="bnrt0", overlay="bnov0", bridged="vmbr0")
OVERLAY_NET, VNI = "10.77.0", 4277
WEB, RX, TX = "bnn-web", "bnn-rx", "bnn-tx"
MAC = "02:00:00:00:77:0b"
PORT = 7010
STREAM_MIB = 256
TRIES = 3  # transfers each way per repetition, the best counts
PROBE_INTERVAL = 0.01
SETTLE = 1.0  # seconds of probing before the first move and after every move

# ---------------------------------------------------------------- the rows of the table
ROWS = (("gap", "longest gap in replies, cold move host 1 <-> 2", "s"),
        ("downtime", "the move's downtime (container_migrate)", "s"),
        ("converge", "convergence (gap - downtime)", "s"),
        ("ctr", "TCP container -> container across hosts", "MB/s"),
        ("host", "TCP host -> host", "MB/s"),
        ("ratio", "throughput container / host", "x"))


def ops():
    """(key, label, unit, target) of every row, in the order of MODES."""
    return tuple(("network_%s_%s" % (mode, row), "fleet network %s: %s" % (mode, label), unit, None)
                 for mode in MODES for row, label, unit in ROWS)


NOTES = {
    "network_routed_gap": "ICMP echo every 10 ms from the lab's controller side (the LAN) to a busybox "
                          "container moved cold by container_migrate (benchmarks/network.py); ours only",
    "network_overlay_gap": "the prober in host 3's network namespace (its bridge is a host of the segment; "
                           "the LAN does not route the overlay's subnet)",
    "network_bridged_gap": "ICMP echo every 10 ms from the lab's controller side (the LAN)",
    "network_routed_converge": "the gap less the downtime, per move; below 0: the replies came back before "
                               "container_migrate's downtime clock stopped (probes every 10 ms)",
    "network_routed_ctr": "256 MiB over one TCP connection, Python in each container's network namespace, "
                          "best of 3 per repetition; host -> host: the same between the hosts' own addresses",
    "network_overlay_ctr": "the overlay: VXLAN over the hosts' LAN, its MTU 50 bytes less",
}


# ---------------------------------------------------------------- pure logic (unit-tested)
def longest_gap(times, start, end):
    """The longest time without a reply between ``start`` and ``end`` (seconds; ``times`` the
    replies' arrival times, any order): the silences between consecutive replies inside the
    window and at its two edges. No reply at all: the whole window."""
    inside = sorted(t for t in times if start <= t <= end)
    if not inside:
        return round(end - start, 3)
    edges = [start] + inside + [end]
    return round(max(b - a for a, b in zip(edges, edges[1:], strict=False)), 3)


def convergence(gap, downtime):
    """The network's part of an outage: ``gap`` less the move's ``downtime``, signed (below 0 when
    the replies came back before ``container_migrate``'s clock stopped); None when either is unknown."""
    if gap is None or downtime is None:
        return None
    return round(gap - downtime, 3)


def mb_per_s(nbytes, seconds):
    """Throughput in MB/s (10**6 bytes), None for a transfer that took no time or did not happen."""
    if not nbytes or not seconds or seconds <= 0:
        return None
    return round(nbytes / seconds / 1e6, 1)


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def mode_choices(doc):
    """The ``fleet.mode`` choices of ``ansible-doc -j`` output for host_network."""
    module = next(iter(doc.values()))["doc"]
    return list(module["options"]["fleet"]["suboptions"]["mode"].get("choices") or [])


# ---------------------------------------------------------------- scripts the lab runs
# ICMP echo every PROBE_INTERVAL until a line on stdin: the monotonic times replies came back
PROBER = r"""
import json, os, select, socket, struct, sys, time
dst, every = sys.argv[1], float(sys.argv[2])
ident = os.getpid() & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b)); t = (t & 0xffff) + (t >> 16)
    return ~(t + (t >> 16)) & 0xffff
seq, got, nxt = 0, [], time.monotonic()
print("ready", flush=True)
while not select.select([sys.stdin], [], [], 0)[0]:
    now = time.monotonic()
    if now >= nxt:
        pkt = struct.pack("!BBHHH", 8, 0, 0, ident, seq & 0xffff) + b"x" * 16
        try:
            s.sendto(pkt[:2] + struct.pack("!H", csum(pkt)) + pkt[4:], (dst, 0))
        except OSError:
            pass
        seq += 1; nxt += every
    if select.select([s], [], [], max(0, min(every, nxt - time.monotonic())))[0]:
        data, src = s.recvfrom(2048)
        if src[0] == dst and data[20] == 0 and struct.unpack("!H", data[24:26])[0] == ident:
            got.append(round(time.monotonic(), 4))
print(json.dumps(dict(sent=seq, got=got)))
"""

SINK = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(120)
print("ready", flush=True)
c, _ = s.accept(); c.settimeout(120); n = 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    n += len(b)
c.sendall(b"%d" % n); c.close()
"""

SOURCE = r"""
import json, socket, sys, time
total = int(sys.argv[3]) << 20
block = memoryview(bytearray(1 << 20))
t0 = time.perf_counter()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=120)
left = total
while left:
    left -= s.send(block[:min(left, len(block))])
s.shutdown(socket.SHUT_WR)
got = int(s.recv(64) or 0)
print(json.dumps(dict(bytes=got, seconds=time.perf_counter() - t0, sent=total)))
"""

PLAY = """---
- name: Fleet network %(mode)s (benchmark)
  hosts: all
  gather_facts: false
  tasks:
    - name: The host role's network tasks
      ansible.builtin.include_role:
        name: ctrhost.fleet.host
        tasks_from: network.yml
      vars:
        ctrhost_bridges: %(bridges)s
        ctrhost_forwarding: %(forwarding)s
        ctrhost_routes: []
        ctrhost_fleet_network: %(fleet)s
"""


# ---------------------------------------------------------------- the lab
def lab_state(args):
    out = subprocess.run([os.path.join(REPO, "scripts", "lab"), "--name", args.lab, "status", "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def available_modes():
    """The modes the installed host_network offers (``ansible-doc``), in the order of MODES."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=sides_mod.COLLECTIONS)
    proc = subprocess.run([os.path.join(REPO, ".venv", "bin", "ansible-doc"), "-j", "-t", "module",
                           "ctrhost.fleet.host_network"], capture_output=True, text=True, env=env)
    try:
        choices = mode_choices(json.loads(proc.stdout))
    except (ValueError, KeyError, StopIteration):
        choices = []
    return [m for m in MODES if m in choices]


def plan(mode, state):
    """What the mode needs: the playbook's variables and the containers' addresses."""
    lan = state["net4"]
    bridge = BRIDGES[mode]
    if mode == "overlay":
        bridges = [dict(name=bridge, ipv4=["%s.{{ ansible_play_hosts_all.index(inventory_hostname) + 1 }}/24"
                                           % OVERLAY_NET])]
        fleet_net = dict(mode=mode, bridge=bridge, uplink="eth0", vni=VNI)
        return dict(bridges=bridges, forwarding={}, fleet=fleet_net, net=OVERLAY_NET, gateway=OVERLAY_NET + ".1",
                    prober=("host", 2))
    fleet_net = dict(mode=mode, bridge=bridge, uplink="eth0")
    if mode == "bridged":
        fleet_net["rollback_timeout"] = 60
    return dict(bridges=[dict(name=bridge)], forwarding=dict(ipv4=True) if mode == "routed" else {},
                fleet=fleet_net, net=lan, gateway=state["controller"], prober=("controller", None))


def addresses(p):
    return {WEB: p["net"] + ".201", RX: p["net"] + ".202", TX: p["net"] + ".203"}


def lab_cmd(args, where, cmd):
    """argv running ``cmd`` on the controller side (``where`` None) or in lab host ``where``."""
    lab = os.path.join(REPO, "scripts", "lab")
    if where is None:
        return [lab, "--name", args.lab, "exec", "--", *cmd]
    return [lab, "--name", args.lab, "host-exec", where, "--", *cmd]


def started(args, where, cmd):
    """A long-running script in the lab, once it printed its ready line."""
    proc = subprocess.Popen(lab_cmd(args, where, cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError("%s did not start: %s %s" % (cmd[-4:], line, proc.stderr.read()[-400:]))
    return proc


def adhoc(args, pattern, name, params):
    """An ad hoc run of ctrhost.fleet.NAME: {host: result}."""
    data = fleet.module(args, pattern, name, params)
    out = {}
    for play in data.get("plays", []):
        for task in play.get("tasks", []):
            out.update(task.get("hosts", {}))
    return out


def setup(args, mode, p, tmp):
    path = os.path.join(tmp, "network-%s.yml" % mode)
    with open(path, "w") as fh:
        fh.write(PLAY % dict(mode=mode, bridges=json.dumps(p["bridges"]), forwarding=json.dumps(p["forwarding"]),
                             fleet=json.dumps(p["fleet"])))
    elapsed, _data = fleet.playbook(args, path, {})
    return elapsed


def start_containers(args, hosts, p, ips):
    def item(name, mac=None):
        net = dict(ifname="eth0", bridge=BRIDGES[p["fleet"]["mode"]], ipv4=ips[name] + "/24", gateway=p["gateway"])
        if mac:
            net["mac"] = mac
        return dict(name=name, template=sides_mod.TEMPLATE, state="started",
                    command=["/bin/sh", "-c", sides_mod.IDLE_SH], network=[net])
    adhoc(args, hosts[0], "containers", dict(containers=[item(WEB, MAC), item(RX)]))
    adhoc(args, hosts[1], "containers", dict(containers=[item(TX)]))


def teardown(args, hosts, mode, results):
    bridge = BRIDGES[mode]
    pattern = ":".join(hosts)
    for what, params in (("containers", ("containers", dict(containers=[], purge=True))),
                         ("fleet absent", ("host_network", dict(fleet=dict(mode=mode, bridge=bridge, uplink="eth0",
                                                                           state="absent")))),
                         ("bridge absent", ("host_network", dict(bridges=[dict(name=bridge, state="absent")],
                                                                 force=True)))):
        try:
            res = adhoc(args, pattern, *params)
            if any((r.get("fleet") or {}).get("pending") for r in res.values()):
                adhoc(args, pattern, *params)  # the confirming run
        except Exception as exc:
            results.notes.append("network %s: teardown (%s) failed: %s" % (mode, what, exc))


# ---------------------------------------------------------------- measurements
def moves(args, hosts, state, p, ips, mode, results):
    where = None if p["prober"][0] == "controller" else hosts[p["prober"][1]]
    prober = started(args, where, [sys.executable, "-c", PROBER, ips[WEB], str(PROBE_INTERVAL)])
    done, here = [], 0
    try:
        time.sleep(SETTLE)
        for rep in range(args.reps):
            src, dst = hosts[here], hosts[1 - here]
            scenarios.log("network %s: cold move %s -> %s rep %d/%d" % (mode, src, dst, rep + 1, args.reps))
            t0 = time.monotonic()
            try:
                res = adhoc(args, src, "container_migrate",
                            dict(name=WEB, dest=state["hosts"][dst]["address"], mode="cold"))[src]
                failed = res.get("failed")
            except Exception as exc:
                res, failed = dict(msg=str(exc)), True
            t1 = time.monotonic()
            done.append(dict(t0=t0, t1=t1, downtime=res.get("downtime"), failed=bool(failed),
                             msg=res.get("msg") if failed else None))
            if not failed:
                here = 1 - here
            time.sleep(SETTLE)
        out, err = prober.communicate("stop\n", timeout=60)
    finally:
        if prober.poll() is None:
            prober.kill()
    probed = json.loads(out)
    for move in done:
        key = "network_%s_" % mode
        if move["failed"]:
            results.fail(key + "gap", "ours", RuntimeError(move["msg"] or "container_migrate failed"))
            continue
        gap = longest_gap(probed["got"], move["t0"], move["t1"] + SETTLE)
        results.add(key + "gap", "ours", gap)
        results.add(key + "downtime", "ours", move["downtime"])
        results.add(key + "converge", "ours", convergence(gap, move["downtime"]))
    results.fact("network_%s_gap" % mode, "ours", dict(sent=probed["sent"], replies=len(probed["got"]),
                                                       where="controller" if where is None else where))
    return here


def stream(args, server_host, server_cmd, client_host, client_cmd, ip):
    sink = started(args, server_host, server_cmd + [sys.executable, "-c", SINK, ip, str(PORT)])
    try:
        proc = subprocess.run(lab_cmd(args, client_host, client_cmd + [sys.executable, "-c", SOURCE, ip, str(PORT),
                                                                       str(STREAM_MIB)]),
                              capture_output=True, text=True, timeout=300, cwd=REPO, stdin=subprocess.DEVNULL)
        sink.communicate(timeout=60)
    finally:
        if sink.poll() is None:
            sink.kill()
    if proc.returncode != 0:
        raise RuntimeError("stream to %s rc=%d: %s" % (ip, proc.returncode, proc.stderr[-400:]))
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    if got["bytes"] != got["sent"]:
        raise RuntimeError("stream to %s: %d of %d bytes arrived" % (ip, got["bytes"], got["sent"]))
    return mb_per_s(got["bytes"], got["seconds"])


def throughput(args, hosts, state, ips, mode, results):
    """Per repetition TRIES transfers each way, interleaved (container, host, container, ...);
    the best of each is the repetition's sample (the machine's other work only slows a transfer)."""
    key = "network_%s_" % mode
    netns = ["ip", "netns", "exec"]
    paths = (("ctr", hosts[0], netns + ["ctrhost-" + RX], netns + ["ctrhost-" + TX], ips[RX]),
             ("host", hosts[0], [], [], state["hosts"][hosts[0]]["address"]))
    for rep in range(args.reps):
        scenarios.log("network %s: %d MiB container -> container and host -> host, best of %d, rep %d/%d"
                      % (mode, STREAM_MIB, TRIES, rep + 1, args.reps))
        best = {}
        for _try in range(TRIES):
            for row, server, server_cmd, client_cmd, ip in paths:
                try:
                    value = stream(args, server, server_cmd, hosts[1], client_cmd, ip)
                    results.fact(key + row, "ours", value)
                    best[row] = max(best.get(row) or 0, value)
                except Exception as exc:
                    results.notes.append("network %s: a %s transfer failed: %s" % (mode, row, exc))
        for row in ("ctr", "host"):
            results.add(key + row, "ours", best.get(row))
        results.add(key + "ratio", "ours", ratio(best.get("ctr"), best.get("host")))


def bench_network(args, hosts, results):
    sides_mod.ensure_collections_tree()
    state = lab_state(args)
    modes = available_modes()
    missing = [m for m in MODES if m not in modes]
    if missing:
        results.notes.append("network: %s not measured: the installed host_network does not offer it"
                             % " and ".join(missing))
    adhoc(args, ":".join(hosts[:3]), "template", dict(name=sides_mod.TEMPLATE, src=args.tarball))
    with tempfile.TemporaryDirectory(prefix="bn-network.") as tmp:
        for mode in modes:  # bridged last: it moves the hosts' own addresses onto the bridge
            p = plan(mode, state)
            ips = addresses(p)
            try:
                scenarios.log("network %s: the fleet network on %d hosts" % (mode, len(hosts[:3])))
                results.fact("network_%s_gap" % mode, "ours", dict(setup_seconds=round(setup(args, mode, p, tmp), 2)))
                start_containers(args, hosts, p, ips)
                moves(args, hosts, state, p, ips, mode, results)
                throughput(args, hosts, state, ips, mode, results)
            except Exception as exc:
                results.fail("network_%s_gap" % mode, "ours", exc)
            finally:
                teardown(args, hosts[:3], mode, results)
