"""How many connections the broker takes: max.connections, max.connections.per.ip and
max.connections.per.ip.overrides, as Kafka's ConnectionQuotas.

- Per IP: a connection from an address that already has its maximum is closed as soon as
  it is accepted (Kafka logs "Rejected connection from ..."); the count is released at once.
- Broker-wide: at max.connections Kafka's acceptor stops accepting until a connection
  ends, so new connections wait in the listen backlog. Here the connection is accepted
  and parked (nothing read from it) until a slot is free, first come first served; at
  most `MAX_PARKED` are parked (Kafka's default socket.listen.backlog.size), beyond which
  new ones are closed, as a full backlog would refuse them.
- Inter-broker connections are never parked. With several listeners that is Kafka's
  rule: connections on the inter-broker listener are taken even at the limit, and one
  least recently active connection of another listener is closed to make room. With a
  single listener (which Kafka does not protect), a connection from the address of
  another registered broker is taken as inter-broker: it is taken even at the limit,
  but at most `RESERVED_PER_BROKER` connections per such broker beyond max.connections
  (a follower's fetcher and a liveness probe), so the limit is exceeded by a bounded
  reserve and no client connection is closed for it. Per-IP limits apply to every
  connection, as in Kafka.

Owned by the event loop (no locking). The caller (the broker) says when a connection is
made, admitted and gone; this class only counts and decides.
"""

from __future__ import annotations

import collections
import enum
import ipaddress
from collections.abc import Callable, Iterable

MAX_PARKED = 50
RESERVED_PER_BROKER = 2


class Admission(enum.Enum):
    ACCEPT = "accept"  # serve it now
    PARK = "park"  # wait for a slot (`next_parked` gives it its turn)
    REFUSE_IP = "refuse-ip"  # close it: its address has too many connections
    REFUSE_FULL = "refuse-full"  # close it: too many connections are waiting already


def normalize_ip(address: str) -> str:
    """'::ffff:10.0.0.1' -> '10.0.0.1'; other addresses in their canonical text."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


class ConnectionQuotas:
    """Counts of the connections being served, by address and in total, and the queue of
    parked ones. `broker_addresses()` maps the addresses of the other registered brokers
    to how many of them are there (used only with a single listener, see the module
    docstring)."""

    def __init__(self, max_connections: int, max_per_ip: int,
                 per_ip_overrides: dict[str, int], listeners: Iterable[str],
                 inter_broker_listener: str,
                 broker_addresses: Callable[[], dict[str, int]] = dict) -> None:
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.overrides = {normalize_ip(h): n for h, n in per_ip_overrides.items()}
        self.listeners = list(listeners)
        self.inter_broker_listener = inter_broker_listener
        self.broker_addresses = broker_addresses
        self.per_ip: collections.Counter[str] = collections.Counter()
        self.total = 0  # connections being served (parked ones not included)
        self.reserved: collections.Counter[str] = collections.Counter()  # beyond the limit
        self.parked: collections.deque = collections.deque()

    def limit_for(self, ip: str) -> int:
        return self.overrides.get(ip, self.max_per_ip)

    def admit(self, listener: str, address: str, item: object) -> Admission:
        """A new connection from `address` on `listener`. ACCEPT counts it as served;
        PARK queues `item` (counted against its address only) until `next_parked`."""
        ip = normalize_ip(address)
        if self.per_ip[ip] >= self.limit_for(ip):
            return Admission.REFUSE_IP
        if self.total < self.max_connections and not self.parked:
            self._count(ip)
            return Admission.ACCEPT
        if len(self.listeners) > 1:
            if listener == self.inter_broker_listener:
                self._count(ip)
                return Admission.ACCEPT
        elif self.reserved[ip] < RESERVED_PER_BROKER * self.broker_addresses().get(ip, 0):
            self._count(ip)
            self.reserved[ip] += 1
            return Admission.ACCEPT
        if len(self.parked) >= MAX_PARKED:
            return Admission.REFUSE_FULL
        self.per_ip[ip] += 1
        self.parked.append(item)
        return Admission.PARK

    def excess(self) -> bool:
        """Kafka's closeExcessConnections: with several listeners, more connections are
        served than max.connections because of the inter-broker listener, so one of
        another listener should be closed."""
        return len(self.listeners) > 1 and self.total > self.max_connections

    def next_parked(self) -> object | None:
        """A parked item whose turn has come (now counted as served: `release` it when it
        ends, also if it was gone meanwhile), or None."""
        if self.parked and self.total < self.max_connections:
            self.total += 1
            return self.parked.popleft()
        return None

    def release(self, address: str) -> None:
        """A served connection ended."""
        ip = normalize_ip(address)
        self.total -= 1
        if self.reserved[ip]:
            self.reserved[ip] -= 1
            if not self.reserved[ip]:
                del self.reserved[ip]
        self._uncount_ip(ip)

    def _count(self, ip: str) -> None:
        self.per_ip[ip] += 1
        self.total += 1

    def _uncount_ip(self, ip: str) -> None:
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]
