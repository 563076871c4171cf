"""Helpers for the one-way proof: two network namespaces joined by a link that carries nothing back.

:func:`one_way_link` builds a collector namespace and a gateway namespace joined by a veth pair,
with TEST-NET-style addresses (10.201.x.0/30) that exist only inside the two namespaces, so no
packet of the test can ever leave them. Then it makes the link one-way *in the kernel*: an
nftables ``netdev`` ingress chain on the collector's end drops every frame that arrives from the
gateway's side (IPv4, ARP, anything), and counts them. Because no ARP reply can come back, both
ends get permanent neighbour entries (static ARP), exactly as across a hardware data diode.
IPv6 is switched off on both ends so nothing chatters on the link on its own.

Processes run inside a namespace through ``ip netns exec`` (which execs the command, so the
process id is the command's own and SIGTERM reaches it). HTTP requests inside a namespace go
through a one-shot stdlib Python client run there (:meth:`OneWayLink.http_get`).

Everything is torn down in ``finally`` blocks: processes first, then the namespaces (deleting a
namespace also deletes its end of the veth pair and the nftables table in it).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tests.support.diode import Running, run_process

#: The nftables program for the collector's namespace: the kernel half of the data diode.
#: ``synack`` counts the TCP handshake replies among the dropped frames (the HTTP case).
_NFT_RULES = """\
table netdev qdd_diode {{
    counter backward {{}}
    counter synack {{}}
    chain backward {{
        type filter hook ingress device "{dev}" priority filter; policy accept;
        tcp flags & (syn | ack) == syn | ack counter name "synack"
        counter name "backward" drop
    }}
}}
"""

#: A GET inside a namespace; prints ``{"status": ..., "body": ...}`` (status 0: no answer).
_HTTP_GET = """\
import json, sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1], headers=json.loads(sys.argv[2]))
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        status, body = response.status, response.read()
except urllib.error.HTTPError as err:
    status, body = err.code, err.read()
except OSError as err:
    status, body = 0, str(err).encode()
sys.stdout.write(json.dumps({"status": status, "body": body.decode("latin-1")}))
"""

#: Sends ``argv[3]`` one-byte UDP datagrams to ``argv[1]:argv[2]`` (the diode self-check).
_UDP_PROBE = """\
import socket, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    for _ in range(int(sys.argv[3])):
        sock.sendto(b"?", (sys.argv[1], int(sys.argv[2])))
"""

_counter = itertools.count(1)


class NamespacesUnavailableError(Exception):
    """This process may not create network namespaces (not root, or EPERM)."""


def _run(*argv: str, stdin: str | None = None) -> str:
    """Run a setup command; raise with its stderr when it fails."""
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        msg = f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}"
        raise RuntimeError(msg)
    return result.stdout


def check_namespaces_possible() -> None:
    """Raise :class:`NamespacesUnavailableError` when namespaces are impossible here, else nothing.

    Anything else going wrong (``ip`` or ``nft`` missing, a kernel without nftables) is a
    broken test environment and is left to fail loudly.
    """
    if os.geteuid() != 0:
        msg = "network namespaces need root (euid is not 0)"
        raise NamespacesUnavailableError(msg)
    name = f"qdd-probe-{os.getpid()}-{next(_counter)}"
    result = subprocess.run(
        ["ip", "netns", "add", name], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        if "Operation not permitted" in result.stderr or "Permission denied" in result.stderr:
            msg = f"`ip netns add` is not permitted here (EPERM): {result.stderr.strip()}"
            raise NamespacesUnavailableError(msg)
        msg = f"ip netns add {name} failed: {result.stderr.strip()}"
        raise RuntimeError(msg)
    _run("ip", "netns", "del", name)


@dataclass(frozen=True)
class OneWayLink:
    """Two namespaces and the one-way link between them."""

    collector_ns: str
    gateway_ns: str
    collector_dev: str
    gateway_dev: str
    collector_ip: str
    gateway_ip: str

    def argv(self, ns: str, argv: list[str]) -> list[str]:
        """``argv`` run inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns, *argv]

    @contextlib.contextmanager
    def run(self, ns: str, argv: list[str], env: Mapping[str, str]) -> Iterator[Running]:
        """Run ``argv`` inside ``ns`` (output to temporary files); stop it on exit."""
        with run_process(self.argv(ns, argv), env) as running:
            yield running

    def counter(self, name: str) -> int:
        """Packets counted so far by the named nftables counter (``backward``, ``synack``)."""
        out = _run(
            *self.argv(self.collector_ns, ["nft", "-j", "list", "counter", "netdev"]),
            "qdd_diode",
            name,
        )
        for item in json.loads(out)["nftables"]:
            if "counter" in item:
                packets: int = item["counter"]["packets"]
                return packets
        msg = f"no nftables counter {name!r} in {out!r}"
        raise RuntimeError(msg)

    def probe_backward(self, count: int) -> None:
        """Send ``count`` UDP datagrams from the gateway side to the collector's address."""
        _run(
            *self.argv(self.gateway_ns, [sys.executable, "-I", "-S", "-c", _UDP_PROBE]),
            self.collector_ip,
            "9",
            str(count),
        )

    def http_get(
        self, ns: str, url: str, headers: Mapping[str, str] | None = None
    ) -> tuple[int, str]:
        """``GET url`` from inside ``ns``: (status, body); status 0 when nothing answered."""
        argv = [sys.executable, "-I", "-S", "-c", _HTTP_GET, url, json.dumps(dict(headers or {}))]
        answer: dict[str, Any] = json.loads(_run(*self.argv(ns, argv)))
        return int(answer["status"]), str(answer["body"])


def _mac(ns: str, dev: str) -> str:
    info = json.loads(_run("ip", "-n", ns, "-j", "link", "show", dev))
    address: str = info[0]["address"]
    return address


@contextlib.contextmanager
def one_way_link() -> Iterator[OneWayLink]:
    """Build the two namespaces and the one-way link; delete everything on exit.

    Raises:
        NamespacesUnavailableError: not root, or namespaces not permitted (callers skip).
    """
    check_namespaces_possible()
    n = next(_counter)
    pid = os.getpid()
    subnet = 4 * (pid % 64)  # a /30 inside 10.201.<n>.0/24; only ever seen inside the pair
    link = OneWayLink(
        collector_ns=f"qdd-c-{pid}-{n}",
        gateway_ns=f"qdd-g-{pid}-{n}",
        collector_dev=f"qc{pid % 1_000_000}-{n}"[:15],
        gateway_dev=f"qg{pid % 1_000_000}-{n}"[:15],
        collector_ip=f"10.201.{n % 256}.{subnet + 1}",
        gateway_ip=f"10.201.{n % 256}.{subnet + 2}",
    )
    created: list[str] = []
    try:
        for ns in (link.collector_ns, link.gateway_ns):
            _run("ip", "netns", "add", ns)
            created.append(ns)
            _run(*link.argv(ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]))
            _run(*link.argv(ns, ["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]))
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run(
            *("ip", "link", "add", link.collector_dev, "netns", link.collector_ns),
            *("type", "veth", "peer", "name", link.gateway_dev, "netns", link.gateway_ns),
        )
        ends = (
            (link.collector_ns, link.collector_dev, link.collector_ip),
            (link.gateway_ns, link.gateway_dev, link.gateway_ip),
        )
        for ns, dev, ip in ends:
            _run("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
        # Static ARP on both ends: with the backward direction cut, no ARP reply ever returns.
        collector_mac = _mac(link.collector_ns, link.collector_dev)
        gateway_mac = _mac(link.gateway_ns, link.gateway_dev)
        for ns, dev, peer_ip, peer_mac in (
            (link.collector_ns, link.collector_dev, link.gateway_ip, gateway_mac),
            (link.gateway_ns, link.gateway_dev, link.collector_ip, collector_mac),
        ):
            _run("ip", "-n", ns, "neigh", "replace", peer_ip, "lladdr", peer_mac,
                 "dev", dev, "nud", "permanent")  # fmt: skip
        _run(
            *link.argv(link.collector_ns, ["nft", "-f", "-"]),
            stdin=_NFT_RULES.format(dev=link.collector_dev),
        )
        yield link
    finally:
        errors = []
        for ns in reversed(created):
            result = subprocess.run(
                ["ip", "netns", "del", ns], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                errors.append(f"ip netns del {ns}: {result.stderr.strip()}")
        if errors:
            raise RuntimeError("; ".join(errors))
