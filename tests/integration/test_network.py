# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Container networking on real netlink, inside network namespaces made here.

Each test makes a throwaway "host" netns ``nw-<tag>`` (with a bridge set up by
``ip``, an independent tool) and runs the library in it through ``nsenter``
(``_nwcall.py``); the containers' netns are ``/run/netns/ctrhost-nw<tag>...``.
Effects are read back with ``ip -j``/``tc -j``/``nft -j`` and proven with
ping and a bounded TCP transfer between these namespaces only. Nothing is
ever configured in the machine's own network namespace.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.net import spec as _netconf

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PY = sys.executable
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "tc", "nsenter", "busybox")),
    reason="needs root, ip, tc, nsenter and busybox")


def sh(*cmd, check=True):
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60)


class Host:
    """A throwaway host netns with bridge nwbr0 (10.<n>.0.1/24, fd<n>::1/64)."""

    def __init__(self):
        self.tag = uuid.uuid4().hex[:5]
        self.name = "nw-" + self.tag
        self.net = 10 + int(self.tag, 16) % 200
        self.containers = []
        sh("ip", "netns", "add", self.name)
        sh("ip", "-n", self.name, "link", "set", "lo", "up")
        sh("ip", "-n", self.name, "link", "add", "nwbr0", "type", "bridge")
        sh("ip", "-n", self.name, "addr", "add", self.v4(1) + "/24", "dev", "nwbr0")
        sh("ip", "-n", self.name, "addr", "add", self.v6(1) + "/64", "dev", "nwbr0", "nodad")
        sh("ip", "-n", self.name, "link", "set", "nwbr0", "up")

    def v4(self, n):
        return "10.%d.0.%d" % (self.net, n)

    def v6(self, n):
        return "fd%02x::%d" % (self.net, n)

    def cname(self, suffix):
        name = "nw%s%s" % (self.tag, suffix)
        self.containers.append(name)
        return name

    def call(self, module, func, *args, **kwargs):
        res = sh("nsenter", "--net=/run/netns/" + self.name, PY, os.path.join(HERE, "_nwcall.py"),
                 module, func, json.dumps([args, kwargs]))
        return json.loads(res.stdout)

    def ok(self, module, func, *args, **kwargs):
        out = self.call(module, func, *args, **kwargs)
        assert "result" in out, out
        return out["result"]

    def iface(self, cname, n, **extra):
        raw = dict(bridge="nwbr0", ipv4="%s/24" % self.v4(n), gateway=self.v4(1),
                   ipv6="%s/64" % self.v6(n), gateway6=self.v6(1))
        raw.update(extra)
        return raw

    def start(self, cname, raw):
        ifaces = _netconf.normalize(raw, cname)
        path = self.ok("net.netns", "ensure", cname)
        return path, ifaces, self.ok("net.links", "attach", cname, path, ifaces)

    def links(self, ns=None):
        out = json.loads(sh("ip", "-j", "-n", ns or self.name, "link", "show").stdout)
        return {link["ifname"]: link for link in out}

    def ping(self, src_ns, dest, v6=False):
        cmd = ["ip", "netns", "exec", src_ns, "busybox", "ping6" if v6 else "ping", "-c", "1", "-W", "2", dest]
        return sh(*cmd, check=False).returncode == 0

    def cleanup(self):
        for c in self.containers:
            if os.path.lexists("/run/netns/ctrhost-" + c):
                sh("ip", "netns", "del", "ctrhost-" + c, check=False)
        sh("ip", "netns", "del", self.name, check=False)


@pytest.fixture
def host():
    h = Host()
    try:
        yield h
    finally:
        h.cleanup()


SERVER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5999)); s.listen(1); s.settimeout(10)
c, _ = s.accept(); c.settimeout(10); n = 0; t0 = None
while True:
    d = c.recv(65536)
    if not d:
        break
    t0 = t0 or time.monotonic(); n += len(d)
print(n * 8 / (time.monotonic() - t0))
"""
CLIENT = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], 5999), timeout=5); t = time.monotonic(); b = b"x" * 65536; n = 0
while time.monotonic() - t < 2.5 and n < 40_000_000:
    s.sendall(b); n += len(b)
s.close()
"""


def throughput(src_ns, dst_ns, dst_ip):
    """bit/s of a bounded (2.5 s, 40 MB) TCP transfer from src_ns to dst_ip in dst_ns."""
    server = subprocess.Popen(["ip", "netns", "exec", dst_ns, PY, "-c", SERVER, dst_ip],
                              stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(50):
            if sh("ip", "netns", "exec", dst_ns, "busybox", "netstat", "-ltn").stdout.count(":5999"):
                break
            time.sleep(0.05)
        sh("ip", "netns", "exec", src_ns, PY, "-c", CLIENT, dst_ip)
        return float(server.communicate(timeout=20)[0])
    finally:
        server.kill()
        server.wait()


def test_two_containers_ping_each_other_and_the_bridge(host):
    a, b = host.cname("a"), host.cname("b")
    pa, ia, res = host.start(a, [host.iface(a, 2)])
    assert res["changed"]
    pb, ib, _ = host.start(b, [host.iface(b, 3)])
    assert host.ping("ctrhost-" + a, host.v4(3)) and host.ping("ctrhost-" + a, host.v4(1))
    assert host.ping("ctrhost-" + b, host.v4(2))
    assert host.ping("ctrhost-" + a, host.v6(3), v6=True) and host.ping("ctrhost-" + b, host.v6(1), v6=True)
    # independent read: ip -j in the container netns and in the host netns
    inside = host.links("ctrhost-" + a)["eth0"]
    assert inside["address"] == ia[0]["mac"] == _netconf.derive_mac(a, "eth0")
    hv = host.links()[ia[0]["host_veth"]]
    assert hv["master"] == "nwbr0" and "UP" in hv["flags"]
    info = host.ok("net.links", "info", a, pa)
    assert [(i["ifname"], i["ipv4"], i["ipv6"], i["bridge"], i["host_veth"], i["rate"]) for i in info] == [
        ("eth0", host.v4(2) + "/24", host.v6(2) + "/64", "nwbr0", ia[0]["host_veth"], None)]
    # idempotent; check mode on a new container predicts a change and makes nothing
    assert host.ok("net.links", "attach", a, pa, ia) == dict(changed=False, actions=[])
    c = host.cname("c")
    ic = _netconf.normalize([host.iface(c, 4)], c)
    before = set(host.links())
    assert host.ok("net.links", "attach", c, "/run/netns/ctrhost-" + c, ic, check_mode=True)["changed"]
    assert set(host.links()) == before and not os.path.exists("/run/netns/ctrhost-" + c)


def test_rate_holds_and_changes_live(host):
    a = host.cname("r")
    path, ifaces, _ = host.start(a, [host.iface(a, 2, rate="10mbit")])
    veth = ifaces[0]["host_veth"]
    down = throughput(host.name, "ctrhost-" + a, host.v4(2))
    up = throughput("ctrhost-" + a, host.name, host.v4(1))
    assert 8e6 <= down <= 12e6, down
    assert 8e6 <= up <= 12e6, up
    # live: new rate, new address, a second interface; the same netns and veth
    new = _netconf.normalize([host.iface(a, 5, rate="20mbit"), dict(bridge="nwbr0", ipv4="%s/24" % host.v4(6))], a)
    res = host.ok("net.links", "update", a, path, ifaces, new)
    assert res["changed"]
    for dev in (veth, "i" + veth[1:]):  # both directions, read back by tc
        assert "class htb 1:10 root prio 0 rate 20Mbit" in sh("tc", "-n", host.name, "class", "show",
                                                              "dev", dev).stdout
    addrs = json.loads(sh("ip", "-j", "-n", "ctrhost-" + a, "addr", "show", "eth0").stdout)[0]["addr_info"]
    assert {x["local"] for x in addrs if x["scope"] == "global"} == {host.v4(5), host.v6(5)}
    assert host.ping("ctrhost-" + a, host.v4(1)) and host.ping(host.name, host.v4(6))
    assert host.ok("net.links", "update", a, path, new, new)["changed"] is False
    # remove the second interface and the limit
    last = _netconf.normalize([host.iface(a, 5)], a)
    host.ok("net.links", "update", a, path, new, last)
    assert set(host.links("ctrhost-" + a)) == {"lo", "eth0"}
    assert set(host.links()) == {"lo", "nwbr0", veth}
    assert "htb" not in sh("tc", "-n", host.name, "qdisc", "show", "dev", veth).stdout


def test_detach_leaves_no_link_qdisc_or_netns(host):
    a = host.cname("d")
    path, ifaces, _ = host.start(a, [host.iface(a, 2, rate="5mbit"), dict(bridge="nwbr0", ifname="net1")])
    veths = [i["host_veth"] for i in ifaces]
    assert set(host.links()) == {"lo", "nwbr0", veths[0], veths[1], "i" + veths[0][1:]}
    host.ok("net.links", "detach", a, ifaces)
    host.ok("net.netns", "remove", a)
    assert set(host.links()) == {"lo", "nwbr0"}
    assert "htb" not in sh("tc", "-n", host.name, "qdisc", "show").stdout
    assert "ingress" not in sh("tc", "-n", host.name, "qdisc", "show").stdout
    assert not os.path.lexists(path)


@pytest.mark.parametrize("raw, field", [
    (dict(bridge="nwbr0", ipv4="10.1.2.300/24"), "network[0].ipv4"),
    (dict(bridge="nwbr0", ipv4="10.1.2.3/24", gateway="10.1.9.1"), "network[0].gateway"),
    (dict(bridge="nwbr0", ifname="a-very-long-ifname"), "network[0].ifname"),
    (dict(bridge="nwbr0", rate="fast"), "network[0].rate"),
    (dict(bridge="nobridge", ipv4="10.1.2.3/24"), "network[0].bridge"),
    (dict(bridge="nwbr0", ipv4="TAKEN"), "network[0].ipv4"),
])
def test_bad_input_is_a_clear_error_with_nothing_created(host, raw, field):
    a, other = host.cname("x"), host.cname("o")
    _, other_ifaces, _ = host.start(other, [host.iface(other, 7)])
    if raw.get("ipv4") == "TAKEN":
        raw = dict(raw, ipv4="%s/24" % host.v4(7))
    before = set(host.links())
    try:
        ifaces = _netconf.normalize([raw], a)
    except Exception as exc:  # validation alone
        assert getattr(exc, "field", None) == field and field in str(exc)
    else:
        out = host.call("net.spec", "check_conflicts", ifaces, {other: {"network": other_ifaces}})
        assert out.get("field") == field, out
        assert other in out["msg"] or "does not exist" in out["msg"]
    assert set(host.links()) == before and not os.path.lexists("/run/netns/ctrhost-" + a)


PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ctrhost.fleet.host_network:
        bridges:
          - {name: nwhb0, ipv4: [%(v4)s], ipv6: ["%(v6)s"], nat: %(nat)s, state: %(state)s}
        forwarding: {ipv4: true, ipv6: true}
        routes: [{dest: 10.254.%(n)d.0/24, via: %(via)s, state: %(state)s}]
"""


def _play(host, tmp_path, check=False, **values):
    args = dict(v4="10.%d.9.1/24" % host.net, v6="fd%02x:9::1/64" % host.net, nat="true", state="present",
                n=host.net, via="10.%d.9.254" % host.net)
    args.update(values)
    book = tmp_path / "hn.yml"
    book.write_text(PLAYBOOK % args)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".cache", "pytest-collections"),
               ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
    cmd = ["ip", "netns", "exec", host.name, os.path.join(ROOT, ".venv", "bin", "ansible-playbook"),
           "-i", "localhost,", "-e", "ansible_python_interpreter=" + PY, str(book)] + (["--check"] if check else [])
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return int(res.stdout.rsplit("changed=", 1)[1].split()[0])


@pytest.mark.skipif(not shutil.which("nft"), reason="needs nft")
def test_host_network_module_in_a_netns(host, tmp_path):
    assert _play(host, tmp_path, check=True) == 1
    assert "nwhb0" not in host.links()
    assert _play(host, tmp_path) == 1
    link = host.links()["nwhb0"]
    assert "UP" in link["flags"]
    addr = json.loads(sh("ip", "-j", "-n", host.name, "addr", "show", "nwhb0").stdout)[0]["addr_info"]
    assert {"10.%d.9.1" % host.net, "fd%02x:9::1" % host.net} <= {a["local"] for a in addr}
    detail = json.loads(sh("ip", "-j", "-d", "-n", host.name, "link", "show", "nwhb0").stdout)[0]
    assert detail["linkinfo"]["info_data"]["stp_state"] == 0
    nft = sh("ip", "netns", "exec", host.name, "nft", "list", "table", "inet", "ctrhost").stdout
    assert "ip saddr 10.%d.9.0/24" % host.net in nft and "masquerade" in nft
    assert sh("ip", "netns", "exec", host.name, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    assert "10.254.%d.0/24 via" % host.net in sh("ip", "-n", host.name, "route").stdout
    assert _play(host, tmp_path) == 0
    assert _play(host, tmp_path, check=True) == 0
    # an address change and NAT off
    assert _play(host, tmp_path, check=True, v4="10.%d.9.2/24" % host.net, nat="false") == 1
    assert _play(host, tmp_path, v4="10.%d.9.2/24" % host.net, nat="false") == 1
    assert sh("ip", "netns", "exec", host.name, "nft", "list", "table", "inet", "ctrhost", check=False).returncode
    # absent
    assert _play(host, tmp_path, state="absent") == 1
    assert "nwhb0" not in host.links()
    assert _play(host, tmp_path, state="absent") == 0


def test_container_on_host_a_reaches_container_on_host_b():
    """Two hosts on a shared link (as lab hosts are); routes set by _hostnet.apply."""
    ha, hb = Host(), Host()
    try:
        if ha.net == hb.net:
            pytest.skip("random subnets collided")
        link = "10.250.%d" % ha.net
        sh("ip", "link", "add", "nwl" + ha.tag, "netns", ha.name, "type", "veth",
           "peer", "name", "nwl" + hb.tag, "netns", hb.name)
        for h, me, dev in ((ha, 1, "nwl" + ha.tag), (hb, 2, "nwl" + hb.tag)):
            sh("ip", "-n", h.name, "addr", "add", "%s.%d/24" % (link, me), "dev", dev)
            sh("ip", "-n", h.name, "link", "set", dev, "up")
        a, b = ha.cname("x"), hb.cname("y")
        ha.start(a, [ha.iface(a, 2)])
        hb.start(b, [hb.iface(b, 2)])
        assert not ha.ping("ctrhost-" + a, hb.v4(2))  # no route yet
        for h, other, via in ((ha, hb, link + ".2"), (hb, ha, link + ".1")):
            res = h.ok("net.bridges", "apply", forwarding=dict(ipv4=True),
                       routes=[dict(dest="10.%d.0.0/24" % other.net, via=via)])
            assert res["changed"] and res["routes"] == {"10.%d.0.0/24" % other.net: via}
            again = h.ok("net.bridges", "apply", forwarding=dict(ipv4=True),
                         routes=[dict(dest="10.%d.0.0/24" % other.net, via=via)])
            assert again["changed"] is False
        assert ha.ping("ctrhost-" + a, hb.v4(2)) and hb.ping("ctrhost-" + b, ha.v4(2))
    finally:
        ha.cleanup()
        hb.cleanup()
