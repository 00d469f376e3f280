#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: host_network
short_description: Bridges, forwarding, NAT and static routes of a container host
version_added: 0.1.0
description:
  - Creates, changes and deletes the Linux bridges that container interfaces attach to
    (C(network) option of M(ctrhost.fleet.container)), with their IPv4 and IPv6 addresses,
    MTU and STP (off by default). Links and addresses go through netlink (pyroute2).
  - Sets IPv4/IPv6 forwarding (C(net.ipv4.ip_forward), C(net.ipv6.conf.all.forwarding)) of the
    network namespace the module runs in.
  - NAT uses nftables. The module owns one table, C(inet ctrhost), as a whole; its
    C(postrouting) chain masquerades the subnets of every bridge with O(bridges[].nat=true)
    towards other destinations. Idempotence is a compare of the wanted rules with what
    C(nft -j list table inet ctrhost) reports; a difference replaces the table in one atomic
    C(nft -f) transaction. Declare every NAT bridge of a host in the same task.
  - Static routes (O(routes)) send other hosts' container subnets through those hosts'
    addresses, for a fleet (or the lab) whose hosts share a network.
  - Everything applies to the running kernel at once. With O(persist=true) (the default) the
    module also records the declaration in C(<root>/host-network.json), which the host's boot
    unit C(ctrhost-autostart.service) (installed by the C(host) role) applies again at every
    boot, through the same code, before it starts the containers; so bridges, forwarding, NAT and
    routes come back with the host's own boot.
author:
  - ctrhost.fleet maintainers (@ctrhost)
options:
  bridges:
    description: Bridges to manage; bridges not listed are left alone.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Bridge name (at most 15 characters).
        type: str
        required: true
      ipv4:
        description:
          - IPv4 addresses of the bridge in CIDR form (the containers' gateway and subnet).
          - When given, exactly these are kept (others are removed); when omitted, left as they are.
        type: list
        elements: str
      ipv6:
        description:
          - IPv6 addresses in CIDR form, added without duplicate address detection; link-local
            addresses are not managed. Same rules as O(bridges[].ipv4).
        type: list
        elements: str
      mtu:
        description: MTU of the bridge; left as is when omitted.
        type: int
      mac:
        description:
          - MAC address of the bridge, pinned so that container ports joining or leaving (creation,
            removal, every migration) never change it; a bridge left alone takes the lowest MAC of
            its ports, and the containers' neighbour entries for their gateway go stale with it.
          - Default - a stable locally administered MAC derived from the machine id, the host name
            and the bridge name. Give the same value on every host for a gateway MAC that stays
            the same when a container moves between hosts (bridges not sharing a segment).
        type: str
      stp:
        description: Spanning tree protocol.
        type: bool
        default: false
      nat:
        description: Masquerade the bridge's subnets (IPv4 and IPv6) when they leave for other networks.
        type: bool
        default: false
      state:
        description:
          - V(absent) deletes the bridge; refused while container veths are attached unless O(force).
        type: str
        choices: [present, absent]
        default: present
  forwarding:
    description: Forwarding sysctls; an omitted key is left as is.
    type: dict
    suboptions:
      ipv4:
        description: C(net.ipv4.ip_forward).
        type: bool
      ipv6:
        description: C(net.ipv6.conf.all.forwarding).
        type: bool
  routes:
    description:
      - Static routes in the main table, e.g. other hosts' container subnets via those hosts.
    type: list
    elements: dict
    default: []
    suboptions:
      dest:
        description: Destination network in CIDR form.
        type: str
        required: true
      via:
        description: Next hop address.
        type: str
        required: true
      state:
        description: V(absent) removes the route.
        type: str
        choices: [present, absent]
        default: present
  fleet:
    description:
      - The fleet network - how a container's address stays reachable from anywhere in the fleet
        wherever it runs, also across a migration. See C(docs/networking.md).
      - V(routed) (the OpenVZ venet way) - no L2 between the containers of different hosts. Container
        IPv4 addresses are in the subnet of the hosts' LAN (the O(fleet.uplink)'s). The host that runs a
        container holds a host route (C(/32), C(proto 242)) to it through O(fleet.bridge) and answers ARP
        for it on the uplink (a proxy neighbour entry); the bridge answers ARP for everything else (proxy ARP)
        with its MAC, which this mode makes the same on every host (a digest of the bridge name, unless
        O(bridges[].mac) is given), so that a moved container's neighbour entries stay right. Containers use
        any LAN address as their gateway (e.g. the LAN's router).
      - The module sets what the mode needs - C(net.ipv4.ip_forward=1), C(proxy_arp=1) on the bridge,
        C(proxy_delay=0) on the bridge and the uplink - and marks the bridge (its alias reads
        C(ctrhost-fleet routed uplink=NAME)). Containers attached to the bridge are published when their
        host-side interface comes up and withdrawn when it goes down or away; a migration withdraws them at the
        source inside the frozen window and publishes and announces them (gratuitous ARP from the uplink) at
        the destination.
      - IPv6 addresses are not routed by this mode yet.
      - V(overlay) - one L2 segment over any routed underlay, without multicast. O(fleet.bridge) gets a
        VXLAN port, C(ctrvx<VNI>), whose tunnel starts at the first IPv4 address of O(fleet.uplink); broadcasts
        and unknown unicasts go to every host of O(fleet.peers) (head-end replication - one all-zero FDB entry
        per peer, C(bridge fdb show dev ctrvx<VNI>)), unicast MACs are learned from the tunnel. Containers keep
        addresses of a subnet of their own (not the hosts' LAN); give each host's bridge its own address in it,
        and the containers any of them (or a router on the segment) as their gateway. The peer list converges by
        difference - a host that joins is added and one that left is removed, the device and the other
        entries stay. A migration's destination announces the container into the tunnel (a gratuitous ARP from
        its MAC), so that every peer learns at once where it runs.
      - The VXLAN device and the bridge take the uplink's MTU less 50 bytes (the VXLAN overhead over IPv4); a
        larger O(bridges[].mtu) of the bridge is refused. Container interfaces on the bridge without
        C(network[].mtu) take the bridge's MTU. The bridge's alias reads C(ctrhost-fleet overlay uplink=NAME
        vni=N). A change of O(fleet.vni), O(fleet.port) or of the uplink's address makes the device again.
      - V(bridged) (the Proxmox C(vmbr0) way) - O(fleet.bridge) takes the host's physical port O(fleet.uplink), and
        the host's network moves from the NIC to the bridge - every address but IPv6 link-local ones and every
        route of the main table through the NIC (the default route too) but those the kernel makes for an address.
        The bridge takes the NIC's MAC, so the LAN sees no change. Containers on the bridge are then on the LAN
        itself (addresses of the LAN's subnet, the LAN's router as gateway, no NAT). The anti-spoofing filters
        still guard every container port; the uplink port is not a container's and passes. The bridge's alias
        reads C(ctrhost-fleet bridged uplink=NAME). Declare the bridge without C(ipv4), C(ipv6) and C(mac).
      - Moving the address can cut the connection the task runs through, so a V(bridged) change is a "commit
        confirmed" - before anything changes the module records the previous state in
        C(<root>/network-pending.json) and starts a watchdog process of its own session on the host (it survives
        the connection). Unless a later run of this module for the same bridge confirms the change within
        O(fleet.rollback_timeout) seconds, the watchdog puts the previous network and the previous
        C(host-network.json) back by itself (and records it in C(<root>/network-rollback.json)). A run that
        reaches the host with a change pending confirms it (C(fleet.confirmed) in the result); make that run over a new
        connection, so that it proves the host answers - the C(host) role resets its connection, waits for the
        host and runs the module again when C(fleet.pending) is true. A failure half-way puts the previous
        network back at once. V(state=absent) gives the bridge's addresses and routes back to the NIC, which
        leaves the bridge (the bridge stays; declare it absent to delete it).
    type: dict
    version_added: 0.2.0
    suboptions:
      mode:
        description: The fleet network mode.
        type: str
        choices: [routed, overlay, bridged]
        default: routed
      bridge:
        description: The container bridge (declared in O(bridges) of the same task, or existing).
        type: str
        required: true
      uplink:
        description:
          - V(routed) - the host's interface on the LAN that the container addresses belong to.
          - V(bridged) - the host's physical port that becomes a port of the bridge, with the addresses and routes
            the host has on it.
          - V(overlay) - the host's interface towards the other hosts (the underlay); the tunnel starts at its
            first IPv4 address.
        type: str
        required: true
      vni:
        description: The VXLAN network identifier (1-16777215), the same on every host; required with V(overlay).
        type: int
      port:
        description: The UDP port of the tunnel, the same on every host (V(overlay) only; default C(4789)).
        type: int
      peers:
        description:
          - The underlay IPv4 addresses of the hosts of the segment (V(overlay) only). This host's own addresses
            are skipped, so every host can be given the same list - e.g. the inventory's hosts (the C(host) role
            does that when O(fleet.peers) is not given). An empty list makes a segment of this host alone.
        type: list
        elements: str
      rollback_timeout:
        description:
          - V(bridged) only - seconds within which a change that moves the host's network must be confirmed by
            another run of the module, else the host puts its previous network back by itself (0-3600; V(0) turns
            the rollback off; default C(120)).
        type: int
        version_added: 0.2.0
      state:
        description:
          - V(absent) turns the mode off for O(fleet.bridge) (the sysctls are left as they are; an overlay's VXLAN
            device is deleted).
        type: str
        choices: [present, absent]
        default: present
  force:
    description: Delete a bridge even while containers are attached to it.
    type: bool
    default: false
  persist:
    description:
      - Record what this task declares in C(<root>/host-network.json) for the next boot (merged
        with earlier tasks, a bridge or route by name or destination; V(absent) entries leave the
        file). V(false) changes the running kernel only.
    type: bool
    default: true
    version_added: 0.1.0
extends_documentation_fragment:
  - ctrhost.fleet.common
  - ctrhost.fleet.attributes
  - ctrhost.fleet.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
requirements:
  - pyroute2 on the managed host
  - nft (nftables) when a bridge has O(bridges[].nat=true)
notes:
  - IPv6 addresses of bridges and containers are added with C(nodad) so they are usable at once.
"""

EXAMPLES = r"""
- name: Container bridge with NAT to the outside, forwarding on
  ctrhost.fleet.host_network:
    bridges:
      - name: ctr0
        ipv4: [10.10.1.1/24]
        ipv6: [fd10:0:0:1::1/64]
        nat: true
    forwarding:
      ipv4: true
      ipv6: true

- name: Reach the containers of the other hosts through them
  ctrhost.fleet.host_network:
    routes:
      - dest: 10.10.2.0/24
        via: 192.0.2.12
      - dest: fd10:0:0:2::/64
        via: 2001:db8::12

- name: A routed fleet - containers keep their LAN address on whichever host they run
  ctrhost.fleet.host_network:
    bridges:
      - name: ctr0
    forwarding:
      ipv4: true
    fleet:
      mode: routed
      bridge: ctr0
      uplink: eth0

- name: An overlay fleet - one L2 segment over the routed underlay, the same task on every host
  ctrhost.fleet.host_network:
    bridges:
      - name: ctr0
        ipv4: ["10.210.0.{{ groups['ctrhost_hosts'].index(inventory_hostname) + 1 }}/16"]
    fleet:
      mode: overlay
      bridge: ctr0
      uplink: eth0
      vni: 4242
      peers: "{{ groups['ctrhost_hosts'] | map('extract', hostvars, 'ansible_host') | list }}"

- name: Containers on the LAN itself - the bridge takes eth0 and the host's addresses (confirmed below)
  ctrhost.fleet.host_network:
    bridges:
      - name: vmbr0
    fleet:
      mode: bridged
      bridge: vmbr0
      uplink: eth0
      rollback_timeout: 120
  register: bridged

- name: A new connection to the host (the change moved the address the old one used)
  ansible.builtin.meta: reset_connection

- name: Wait for the host to answer
  ansible.builtin.wait_for_connection:
    timeout: 60
  when: bridged.fleet.pending

- name: Confirm the change over the new connection (else the host rolls it back by itself)
  ctrhost.fleet.host_network:
    bridges:
      - name: vmbr0
    fleet:
      mode: bridged
      bridge: vmbr0
      uplink: eth0
  when: bridged.fleet.pending

- name: Remove a bridge
  ctrhost.fleet.host_network:
    bridges:
      - name: ctr9
        state: absent
"""

RETURN = r"""
bridges:
  description: The managed bridges after the run (in check mode, as they would be); null when absent.
  returned: always
  type: dict
  sample: {"ctr0": {"mtu": 1500, "stp": false, "mac": "02:5c:1e:0a:33:7d", "ipv4": ["10.10.1.1/24"],
                    "ipv6": ["fd10:0:0:1::1/64"]}}
nat:
  description: Subnets masqueraded by table C(inet ctrhost), as C(ip SUBNET) / C(ip6 SUBNET).
  returned: always
  type: list
  elements: str
  sample: ["ip 10.10.1.0/24", "ip6 fd10:0:0:1::/64"]
forwarding:
  description: Forwarding sysctls after the run.
  returned: always
  type: dict
  sample: {"ipv4": true, "ipv6": true}
routes:
  description: Managed routes, destination to next hop (null when absent).
  returned: always
  type: dict
  sample: {"10.10.2.0/24": "192.0.2.12"}
fleet:
  description:
    - The fleet network mode of O(fleet.bridge) after the run (null when O(fleet) is not given).
    - With V(overlay) also the tunnel - C(vni), C(port), C(peers) (without this host), C(mtu).
    - With V(bridged) also C(addresses) and C(routes) of the host on the bridge (on the NIC with V(state=absent)),
      C(pending) (true when this run armed a rollback that a later run must confirm), C(rollback_deadline) (its
      Unix time, when pending) and C(confirmed) (true when this run confirmed a pending change).
  returned: always
  type: dict
  sample: {"mode": "overlay", "bridge": "ctr0", "uplink": "eth0", "vni": 4242, "port": 4789,
           "peers": ["192.0.2.12", "192.0.2.13"], "mtu": 1450}
persisted:
  description: Whether the declaration for the next boot (C(<root>/host-network.json)) changed.
  returned: always
  type: bool
  sample: true
commands:
  description: External commands run (or that would run in check mode); netlink changes are not commands.
  returned: always
  type: list
  elements: str
  sample: ["nft -f /dev/stdin"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ctrhost.fleet.plugins.module_utils.host import network as _hostnetwork
from ansible_collections.ctrhost.fleet.plugins.module_utils.core import module as _module

ARGS = _module.argument_spec(
    _module.COMMON_ARGS,
    bridges=dict(type="list", elements="dict", default=[], options=dict(
        name=dict(type="str", required=True),
        ipv4=dict(type="list", elements="str"),
        ipv6=dict(type="list", elements="str"),
        mtu=dict(type="int"),
        mac=dict(type="str"),
        stp=dict(type="bool", default=False),
        nat=dict(type="bool", default=False),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )),
    forwarding=dict(type="dict", options=dict(ipv4=dict(type="bool"), ipv6=dict(type="bool"))),
    routes=dict(type="list", elements="dict", default=[], options=dict(
        dest=dict(type="str", required=True),
        via=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )),
    fleet=dict(type="dict", options=dict(
        mode=dict(type="str", default="routed", choices=["routed", "overlay", "bridged"]),
        bridge=dict(type="str", required=True),
        uplink=dict(type="str", required=True),
        vni=dict(type="int"),
        port=dict(type="int"),
        peers=dict(type="list", elements="str"),
        rollback_timeout=dict(type="int"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )),
    force=dict(type="bool", default=False),
    persist=dict(type="bool", default=True),
)


def main():
    module = AnsibleModule(argument_spec=ARGS, supports_check_mode=True)
    _module.run(module, _hostnetwork.network_task, module.params, module.check_mode)


if __name__ == "__main__":
    main()
