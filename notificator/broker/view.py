# -*- test-case-name: tests.test_broker_view -*-
"""
What one machine of C{server.workers} serves, seen from any of its workers
(L{Machine}, L{NodeView}, L{MachineView}): each worker's snapshot of its
counters, its users and streams and its metrics, which the Redis broker
publishes every second and reads back
(L{notificator.broker.redis.view.MachineViews}), and which C{/health},
C{/users}, C{/metrics} and the monitor page merge
(L{notificator.http.monitor}).

Pure data and its JSON: no Redis and no HTTP here.  A snapshot is made
from the hub, the counters and a metrics registry (L{snapshot},
L{stream_list}), written as JSON (L{NodeView.summary_json},
L{encode_streams}) and read back (L{NodeView.from_json}), defensively: a
snapshot that is not ours is skipped, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
from prometheus_client.core import Metric

from notificator.hub import Hub
from notificator.stats import Stats

#: Seconds between a worker's snapshots.
INTERVAL = 1.0

#: Seconds a snapshot is kept: a worker that stopped publishing (killed,
#: stuck) drops out of the machine's view after this.
TTL = 3.0

#: The counters of C{/health} that are summed over the workers.
SUMMED = ("streams", "opened", "published", "delivered", "rejected", "heartbeats")


@attrs.frozen
class Machine:
    """
    The machine a worker of C{server.workers} belongs to.

    @ivar name: the machine's node name (C{cluster.node}, else the host
        and port), which its workers' names extend with C{-w<k>}: the
        workers of one machine share it, another machine on the same
        Redis has its own.
    @ivar workers: how many workers the machine runs.
    @ivar slot: this worker's number (0 to C{workers} - 1).
    """

    name: str
    workers: int
    slot: int


def share(total: int, workers: int, slot: int) -> int:
    """
    Worker C{slot}'s part of a cap of C{total} over C{workers} workers: the
    parts differ by at most one and sum to C{total} exactly (at least 1
    each, so that a cap below the number of workers still serves).
    """
    base, extra = divmod(total, workers)
    return max(1, base + (1 if slot < extra else 0))


@attrs.frozen
class StreamView:
    """One open stream as the machine's C{/users} shows it."""

    user_id: str
    connection_id: int
    connected_at: int  # ms since the epoch
    peer: str
    node: str


@attrs.frozen
class NodeView:
    """
    One worker's snapshot.

    @ivar node: its name.
    @ivar status: C{"ok"}, C{"draining"} or C{"unavailable"}.
    @ivar started_at: when it started (ms since the epoch).
    @ivar at: when the snapshot was made (ms since the epoch).
    @ivar counts: the counters of C{/health} (L{SUMMED}, and C{users}).
    @ivar users: its open streams per user id.
    @ivar version: its hub's version when its streams were listed.
    @ivar streams: its open streams, when asked for (L{None}: not read).
    @ivar metrics: its metric families, as L{encode_metrics} writes them.
    """

    node: str
    status: str
    started_at: int
    at: int
    counts: Mapping[str, int]
    users: Mapping[str, int]
    version: int = 0
    streams: tuple[StreamView, ...] | None = None
    metrics: Sequence[Any] = ()

    def summary_json(self) -> bytes:
        """The snapshot without its streams, as the worker publishes it."""
        return json.dumps(
            {
                "node": self.node,
                "status": self.status,
                "startedAt": self.started_at,
                "at": self.at,
                "counts": dict(self.counts),
                "users": dict(self.users),
                "metrics": list(self.metrics),
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode("utf-8")

    @classmethod
    def from_json(cls, summary: bytes, streams: bytes | None = None) -> NodeView:
        """
        A snapshot read back (with its streams, L{encode_streams}'s, when
        given).

        @raise ValueError: not a snapshot of ours.
        """
        try:
            s = json.loads(summary)
            counts = {str(k): int(v) for k, v in s["counts"].items()}
            users = {str(k): int(v) for k, v in s["users"].items()}
            node = str(s["node"])
            view = cls(
                node=node,
                status=str(s["status"]),
                started_at=int(s["startedAt"]),
                at=int(s["at"]),
                counts=counts,
                users=users,
                metrics=tuple(s.get("metrics", ())),
            )
            if streams is not None:
                version, listed = decode_streams(streams, node)
                view = attrs.evolve(view, version=version, streams=listed)
        except (KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
            raise ValueError(f"not a worker's snapshot: {e!r}")
        return view


@attrs.frozen
class MachineView:
    """
    Every live worker of the machine, as C{/health}, C{/users} and
    C{/metrics} answer.

    @ivar nodes: one snapshot per worker, this one's made now, sorted by name.
    @ivar machine: the machine's name.
    @ivar complete: whether the other workers' snapshots could be read
        (else L{nodes} holds this worker's alone, and L{reason} says why).
    """

    nodes: tuple[NodeView, ...]
    machine: str
    complete: bool = True
    reason: str | None = None

    def sums(self) -> dict[str, int]:
        """The L{SUMMED} counters over every worker, and C{users}: distinct ones."""
        out = {key: sum(n.counts.get(key, 0) for n in self.nodes) for key in SUMMED}
        seen: set[str] = set()
        for n in self.nodes:
            seen.update(n.users)
        out["users"] = len(seen)
        return out

    def etag(self) -> bytes:
        """Changes whenever a stream opens or closes on any worker (as far as seen)."""
        parts = sorted((n.node, n.started_at, n.version) for n in self.nodes)
        digest = hashlib.sha1(repr(parts).encode("utf-8")).hexdigest()[:16]
        return b'"m-%d-%s"' % (len(parts), digest.encode("ascii"))


def stream_list(hub: Hub) -> list[list[Any]]:
    """Every open stream of C{hub}: C{[user id, connection id, connected at (ms), peer]}."""
    return [
        [user_id, s.connection_id, int(s.connected_at * 1000), s.peer]
        for user_id, streams in hub.users()
        for s in streams
    ]


def encode_streams(version: int, streams: list[list[Any]]) -> bytes:
    """The streams a worker publishes beside its summary, with its hub's version."""
    return json.dumps(
        {"version": version, "streams": streams}, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def decode_streams(data: bytes, node: str) -> tuple[int, tuple[StreamView, ...]]:
    """
    L{encode_streams} read back.

    @raise ValueError: not what it writes.
    """
    try:
        s = json.loads(data)
        listed = tuple(
            StreamView(str(u), int(c), int(t), str(p), node) for u, c, t, p in s["streams"]
        )
        return int(s["version"]), listed
    except (KeyError, TypeError, UnicodeDecodeError) as e:
        raise ValueError(f"not a worker's streams: {e!r}")


def snapshot(
    node: str,
    status: str,
    hub: Hub,
    stats: Stats,
    now: float,
    metrics: Sequence[Any] = (),
    with_streams: bool = False,
) -> NodeView:
    """This worker's snapshot, made now (C{now}: POSIX time)."""
    users = {user_id: len(streams) for user_id, streams in hub.users()}
    streams = None
    if with_streams:
        streams = tuple(StreamView(u, c, t, p, node) for u, c, t, p in stream_list(hub))
    return NodeView(
        node=node,
        status=status,
        started_at=int(stats.started_at * 1000),
        at=int(now * 1000),
        counts={
            "users": len(users),
            "streams": hub.stream_count,
            **stats.totals(),
        },
        users=users,
        version=hub.version,
        streams=streams,
        metrics=metrics,
    )


def status_of(hub: Hub, problem: str | None) -> str:
    """A worker's C{/health} status: draining, unavailable (Redis) or ok."""
    if hub.draining:
        return "draining"
    return "unavailable" if problem is not None else "ok"


# -- metrics ----------------------------------------------------------------------


def encode_metrics(families: Iterable[Metric]) -> list[Any]:
    """
    Metric families (a registry's C{collect()}) as JSON-able lists:
    C{[name, type, help, unit, [[sample name, labels, value], ...]]}
    (C{NaN} and infinities as strings, which JSON lacks).
    """
    out: list[Any] = []
    for family in families:
        samples = [[s.name, dict(s.labels), _number(s.value)] for s in family.samples]
        out.append([family.name, family.type, family.documentation, family.unit, samples])
    return out


def _number(value: float) -> float | str:
    return value if math.isfinite(value) else repr(float(value))


def machine_metrics(nodes: Iterable[tuple[str, Sequence[Any]]], label: str) -> list[Metric]:
    """
    The families of every worker (C{(node, encode_metrics's lists)}),
    merged by name, each sample with the label C{label} naming its worker:
    what C{/metrics} of a machine serves.  Families that are not well
    formed are skipped.
    """
    merged: dict[str, Metric] = {}
    for node, families in nodes:
        for entry in families:
            try:
                name, typ, documentation, unit, samples = entry
                family = merged.get(name)
                if family is None:
                    family = merged[name] = Metric(name, documentation, typ, unit)
                for sample_name, labels, value in samples:
                    family.add_sample(str(sample_name), {**labels, label: node}, float(value))
            except (TypeError, ValueError, AttributeError):
                continue
    return list(merged.values())
