"""The benchmarks still run: each one's small run, as a user would start it.

Figures are not checked (benchmarks print them; tests never time anything): only
that every measurement ran to its end and wrote its section. The client's
benchmark once stopped at its propagation step, unnoticed, when the replica's
`apply_changes` took one more argument than its timing wrapper passed on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_client_benchmark_runs_every_measurement_to_its_end() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.client", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads((ROOT / "bench" / "out" / "client-quick.json").read_text())
    for section in ("initial_sync", "search", "backlog", "propagation", "cold_decision",
                    "cold_decision_keyring", "batch"):  # fmt: skip
        assert section in figures, section
    assert figures["server_exit_code"] == 0
    assert figures["propagation"]["pairs_received"] == figures["propagation"]["pairs_expected"]
