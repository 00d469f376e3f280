"""One L2 segment across a lab: a bridge on the lab's controller side joined by a veth
to a container bridge on each lab host, so a container's address moves along with it
and the controller side reaches it wherever it runs."""

import subprocess


def ns(lab, host=None):
    """Network namespace of a lab host (or of the lab's controller side)."""
    return "ctrhost-%s-%s" % (lab.name, host or "ctl")


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def controller_bridge(lab, name, cidr):
    ip("-n", ns(lab), "link", "add", name, "type", "bridge")
    ip("-n", ns(lab), "addr", "add", cidr, "dev", name)
    ip("-n", ns(lab), "link", "set", name, "up")


def uplink(lab, host, ctl_port, ctl_bridge, host_port, host_bridge):
    """A veth from ``ctl_bridge`` (controller side) to ``host_bridge`` on ``host``."""
    ip("link", "add", ctl_port, "netns", ns(lab), "type", "veth", "peer", "name", host_port,
       "netns", ns(lab, host))
    ip("-n", ns(lab), "link", "set", ctl_port, "master", ctl_bridge, "up")
    ip("-n", ns(lab, host), "link", "set", host_port, "master", host_bridge, "up")
