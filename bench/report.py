# -*- test-case-name: tests.test_bench -*-
"""
Turn load generator results into a plain-text table: one column per run,
one row per figure, with the project's targets (issue 4) beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

#: The targets on one core, access log on (bench/README.rst; docs/performance.rst).
TARGETS = {
    "kb": "<= 6 at 10k",
    "p99": "<= 1.5 at 10k, 500/s",
    "burst": ">= 6000 at 5k",
    "hb": "<= 1.0 per 10 s at 10k, 1 s",
    "open": "<= 1.2 for 10k",
}

Run = tuple[str, dict[str, Any], "dict[str, Any] | None"]


def _get(d: dict[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _num(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        x = round(x, digits)
        return f"{x:g}" if abs(x) < 1e6 else f"{x:.0f}"
    return str(x)


def _lat(p: dict[str, Any] | None) -> str:
    if not p or not p.get("count"):
        return "-"
    return " / ".join(_num(p.get(k)) for k in ("p50", "p90", "p99", "max"))


def _rows() -> list[tuple[str, str, Callable[[dict[str, Any], dict[str, Any] | None], str]]]:
    def lost(m: dict[str, Any], _: Any) -> str:
        parts = []
        for phase in ("latency", "burst"):
            p = m.get(phase)
            if p:
                parts.append(f"{p.get('lost', 0)}/{p.get('duplicates', 0)}/{p.get('misrouted', 0)}")
        return " + ".join(parts) or "-"

    def hb_seen(_: Any, h: dict[str, Any] | None) -> str:
        i = _get(h, "idle")
        if not i:
            return "-"
        return f"{i['heartbeats_received']}/{i['heartbeats_expected']}"

    def loadgen(m: dict[str, Any], h: dict[str, Any] | None) -> str:
        phases = [m.get(p) for p in ("connect", "latency", "burst")] + [_get(h, "connect")]
        cpu = [p.get("loadgen_cpu_pct") or 0 for p in phases if p]
        lag = [p.get("loadgen_loop_lag_p99_ms") or 0 for p in phases if p]
        return (
            f"{_num(max(cpu, default=None), 0)} % / {_num(max(lag, default=None), 1)} ms"
            if cpu
            else "-"
        )

    def rate(m: dict[str, Any], _: Any) -> str:
        r = _get(m, "latency", "rate_per_s")
        return (
            f"latency p50/p90/p99/max at {_num(r, 0)}/s (ms)"
            if r
            else "latency p50/p90/p99/max (ms)"
        )

    return [
        (
            "streams connected",
            "",
            lambda m, h: f"{_get(m, 'connect', 'connected')}/{_get(m, 'connect', 'requested')}",
        ),
        (
            "time to open all streams (s)",
            TARGETS["open"],
            lambda m, h: _num(_get(m, "connect", "time_all_s")),
        ),
        ("connect rate (streams/s)", "", lambda m, h: _num(_get(m, "connect", "rate_per_s"), 0)),
        (
            "server RSS after connect (MB)",
            "",
            lambda m, h: _num((_get(m, "connect", "rss_after_kb") or 0) / 1024 or None, 1),
        ),
        (
            "KB of RSS per stream",
            TARGETS["kb"],
            lambda m, h: _num(_get(m, "connect", "kb_per_conn")),
        ),
        (
            "latency p50/p90/p99/max (ms)",
            TARGETS["p99"],
            lambda m, h: _lat(_get(m, "latency", "latency_ms")),
        ),
        (
            "server CPU per notification (us)",
            "",
            lambda m, h: _num(_get(m, "latency", "server_cpu_us_per_notification"), 0),
        ),
        ("lost/dup/misrouted (latency + burst)", "0", lost),
        (
            "burst accepted POST/s",
            TARGETS["burst"],
            lambda m, h: _num(_get(m, "burst", "accepted_per_s"), 0),
        ),
        ("burst delivered/s", "", lambda m, h: _num(_get(m, "burst", "delivered_per_s"), 0)),
        (
            "burst latency p50/p90/p99/max (ms)",
            "",
            lambda m, h: _lat(_get(m, "burst", "latency_ms")),
        ),
        ("burst errors", "0", lambda m, h: _num(_get(m, "burst", "errors"))),
        (
            "burst server CPU (% of a core)",
            "",
            lambda m, h: _num(_get(m, "burst", "server_cpu_pct"), 0),
        ),
        ("idle server CPU s, no heartbeat", "", lambda m, h: _num(_get(m, "idle", "server_cpu_s"))),
        (
            "idle server CPU s, heartbeats",
            TARGETS["hb"],
            lambda m, h: _num(_get(h, "idle", "server_cpu_s")),
        ),
        ("heartbeats received/expected", "all", hb_seen),
        (
            "heartbeat lag p50/p90/p99/max (ms)",
            "",
            lambda m, h: _lat(_get(h, "idle", "heartbeat_lag_ms")),
        ),
        ("load generator CPU max / loop lag p99", "well < 100 %", loadgen),
        (
            "errors",
            "",
            lambda m, h: "; ".join(filter(None, [m.get("error"), _get(h, "error")])) or "none",
        ),
    ]


def table(runs: Sequence[Run]) -> str:
    """
    A text table of runs: each is (label, main result, heartbeat-run result
    or None), as written by L{loadgen} and C{bench/local.py}.
    """
    rows = [["figure", *(label for label, _, _ in runs), "target"]]
    for name, target, cell in _rows():
        values = []
        for _, main, hb in runs:
            try:
                values.append(cell(main, hb))
            except (TypeError, KeyError, ValueError):
                values.append("-")
        if name.startswith("idle") or name.startswith("heartbeat"):
            if all(v in ("-", "") for v in values):
                continue
        rows.append([name, *values, target])
    width = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, width, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in width))
    return "\n".join(lines)
