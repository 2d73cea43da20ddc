"""Checks of the nodes and the network: node names, IP and MAC addresses and probe UIDs are
unique; MACs are unicast; addresses sit inside the subnet and clear of the gateway's and the
coordinator's; every node's port is a TCP port."""

from __future__ import annotations

import ipaddress

from nmcm_deploy.manifest.checks.context import (
    Context,
    Where,
    as_dict,
    as_int,
    as_ip,
    as_list,
    as_str,
)

MAX_PORT = 65535
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def check_nodes(ctx: Context) -> None:
    """Names, IPs, MACs and probe UIDs are unique; MACs are usable unicast addresses."""
    seen: dict[str, dict[str, int]] = {"name": {}, "ip": {}, "mac": {}, "uid": {}}
    labels = {"name": "node name", "ip": "IP address", "mac": "MAC address", "uid": "probe UID"}

    def unique(kind: str, key: str, segments: Where, shown: str) -> None:
        if key in seen[kind]:
            first = seen[kind][key]
            ctx.add(segments, f"duplicate {labels[kind]} {shown} (first used at line {first})")
        else:
            seen[kind][key] = ctx.line(*segments)

    for i, node in ctx.nodes():
        base: Where = ("spec", "nodes", i)
        name = as_str(node.get("name"))
        if name is not None and ctx.clean(*base, "name"):
            unique("name", name, (*base, "name"), repr(name))
        w5500 = as_dict(node.get("w5500"))
        ip = as_ip(w5500.get("ip"))
        if ip is not None and ctx.clean(*base, "w5500", "ip"):
            unique("ip", str(ip), (*base, "w5500", "ip"), str(ip))
        mac = as_str(w5500.get("mac"))
        if mac is not None and ctx.clean(*base, "w5500", "mac"):
            unique("mac", mac.lower(), (*base, "w5500", "mac"), mac)
            _check_mac(ctx, (*base, "w5500", "mac"), mac)
        uid = as_str(as_dict(node.get("probe")).get("uid"))
        if uid is not None and ctx.clean(*base, "probe", "uid"):
            unique("uid", uid.upper(), (*base, "probe", "uid"), repr(uid))


def _check_mac(ctx: Context, segments: Where, mac: str) -> None:
    octets = mac.split(":")
    try:
        first = int(octets[0], 16)
    except ValueError:
        return
    if all(o == "00" for o in octets):
        ctx.add(segments, f"{mac} is the all-zero MAC address; use e.g. 02:4e:4d:00:00:01")
    elif first & 1:
        ctx.add(
            segments,
            f"{mac} is a multicast MAC address (lowest bit of the first byte set); a node needs "
            "a unicast one, e.g. 02:4e:4d:00:00:01 (locally administered)",
        )


def check_network(ctx: Context) -> None:
    """Addresses are inside the subnet, not its network or broadcast address, and distinct."""
    net = as_dict(ctx.spec.get("network"))
    base: Where = ("spec", "network")
    subnet: ipaddress.IPv4Network | None = None
    text = as_str(net.get("subnet"))
    if text is not None and ctx.clean(*base, "subnet"):
        try:
            subnet = ipaddress.IPv4Network(text, strict=True)
        except ValueError:
            try:
                subnet = ipaddress.IPv4Network(text, strict=False)
            except ValueError:
                ctx.add((*base, "subnet"), f"{text!r} is not an IPv4 subnet")
            else:
                ctx.add(
                    (*base, "subnet"),
                    f"{text} has host bits set; did you mean {subnet.with_prefixlen}?",
                )
                subnet = None

    addresses: list[tuple[Where, str, ipaddress.IPv4Address]] = []
    for key in ("gateway", "coordinator"):
        ip = as_ip(net.get(key))
        if ip is not None and ctx.clean(*base, key):
            addresses.append(((*base, key), key, ip))
    for i, node in ctx.nodes():
        segments: Where = ("spec", "nodes", i, "w5500", "ip")
        ip = as_ip(as_dict(node.get("w5500")).get("ip"))
        if ip is not None and ctx.clean(*segments):
            label = f"node {node.get('name')!r}" if as_str(node.get("name")) else f"node {i}"
            addresses.append((segments, label, ip))

    for segments, label, ip in addresses:
        if ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip == _BROADCAST:
            ctx.add(segments, f"{ip} cannot be the address of a {label.split()[0]} on Ethernet")
            continue
        if subnet is None:
            continue
        if ip not in subnet:
            ctx.add(segments, f"{ip} ({label}) is outside network.subnet {subnet.with_prefixlen}")
        elif subnet.prefixlen < 31 and ip == subnet.network_address:
            ctx.add(segments, f"{ip} is the network address of {subnet.with_prefixlen}")
        elif subnet.prefixlen < 31 and ip == subnet.broadcast_address:
            ctx.add(segments, f"{ip} is the broadcast address of {subnet.with_prefixlen}")

    # A node must not take the gateway's or the coordinator's address. The gateway and the
    # coordinator may be the same machine (a laptop routing a lab switch), so that is allowed.
    infra = {
        ip: (label, segments) for segments, label, ip in addresses if not label.startswith("node")
    }
    for segments, label, ip in addresses:
        if label.startswith("node") and ip in infra:
            other, where = infra[ip]
            ctx.add(segments, f"{ip} is also the {other}'s address (line {ctx.line(*where)})")

    # Node i (in stage order) listens on port + i (compiler/cluster.py's node_network).
    port = as_int(net.get("port"))
    count = len(as_list(ctx.spec.get("nodes")))
    if port is not None and ctx.clean(*base, "port") and port + count - 1 > MAX_PORT:
        ctx.add(
            (*base, "port"),
            f"port {port} leaves no room for {count} node(s): they listen on ports "
            f"{port}..{port + count - 1}, and the highest TCP port is {MAX_PORT}",
        )
