"""Prometheus text metrics (`GET /metrics`): counters, gauges and one histogram.

Small on purpose: a few named series kept in memory by this process and
written in the text exposition format, version 0.0.4.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import ClassVar

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1


class Metrics:
    """This process's metrics; names are documented in `HELP`."""

    HELP: ClassVar[dict[str, tuple[str, str]]] = {
        "fleetgate_connections": ("gauge", "Open websocket connections"),
        "fleetgate_connections_total": ("counter", "Websocket connections accepted"),
        "fleetgate_messages_total": ("counter", "Messages received, by type"),
        "fleetgate_mutations_total": ("counter", "Pushed mutations, by outcome"),
        "fleetgate_pushes_total": ("counter", "Push messages decided"),
        "fleetgate_conflicts_total": ("counter", "Mutations that conflicted"),
        "fleetgate_rejections_total": ("counter", "Protocol errors sent, by code"),
        "fleetgate_sign_ins_total": ("counter", "Sign-in attempts, by result"),
        "fleetgate_resyncs_total": ("counter", "Sessions told to resync (too far behind)"),
        "fleetgate_dropped_sessions_total": (
            "counter",
            "Sessions cut off because they stopped reading what was sent to them",
        ),
        "fleetgate_push_faults_total": (
            "counter",
            "Mutations answered internal because deciding them failed (a server bug)",
        ),
        "fleetgate_webhook_deliveries_total": ("counter", "Webhook delivery attempts, by result"),
        "fleetgate_broadcast_latency_seconds": (
            "histogram",
            "From commit to a change's frame written to a session",
        ),
    }

    def __init__(self) -> None:
        self.gauges: dict[str, float] = defaultdict(float)
        self.counters: dict[tuple[str, str, str], float] = defaultdict(float)
        self.latency = Histogram()

    def count(self, name: str, label: str = "", value: str = "", amount: float = 1.0) -> None:
        """Add `amount` to a counter, with one optional label."""
        self.counters[(name, label, value)] += amount

    def render(self) -> str:
        """Every series in the Prometheus text format."""
        lines: list[str] = []
        for name, (kind, text) in self.HELP.items():
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")
            if kind == "gauge":
                lines.append(f"{name} {self.gauges[name]:g}")
            elif kind == "counter":
                series = sorted((k, v) for k, v in self.counters.items() if k[0] == name)
                if not series:
                    lines.append(f"{name} 0")
                for (_, label, value), amount in series:
                    tag = f'{{{label}="{_escape(value)}"}}' if label else ""
                    lines.append(f"{name}{tag} {amount:g}")
            else:
                cumulative = 0
                for bound, count in zip(self.latency.buckets, self.latency.counts, strict=False):
                    cumulative += count
                    lines.append(f'{name}_bucket{{le="{bound:g}"}} {cumulative}')
                lines.append(f'{name}_bucket{{le="+Inf"}} {self.latency.count}')
                lines.append(f"{name}_sum {self.latency.total:g}")
                lines.append(f"{name}_count {self.latency.count}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
