"""Soak: the fault-injection scenarios of tests/e2e/faults.py, many seeds each.

    .venv/bin/python -m bench.soak [--seeds N] [--scenario NAME ...] [--first-seed S]
                                   [--jobs J] [--keep]

Starts a throwaway embedded Postgres (one per job), a fresh database per
scenario, and runs each scenario with seeds S, S+1, ...: `round(N * share)`
runs per scenario, at least one (`faults.SCENARIOS` has the shares). The mix,
per seed unit: proxy_chaos 2 (the broadest, in process); ack_lost,
compacted_cursor, poison_mutation and clock_skew 1 (in process, 0.6 to 3.5 s a
run); token_expiry 0.6 (it waits out one-second tokens); revoked_offline 0.6
and client_killed_after_commit 0.4 (`fleetgate sync` processes); lost_notification
0.5, server_killed_mid_push 0.4 and postgres_restart 0.4 (server processes
killed, or Postgres restarted); server_killed_mid_snapshot 0.25 (a tenant of
2,400 users, several snapshots). `--seeds 120` is 1,098 runs, about 45 minutes
with `--jobs 2` on 2 cores. `--scenario` (repeatable) runs only those, N seeds
each. `--jobs 2` runs scenarios in two processes, each with its own Postgres
(a Postgres restart then disturbs only its own job).

Prints one line per failed run as it happens (seed, problems), then a table:
per scenario runs, mutations, lost, doubled, resurrected, failures (with the
seed of each failed run) and seconds, and the totals. Exit status 1 if
anything was lost, doubled or resurrected, or a run failed; else 0. Replica
directories and server logs of failed runs are kept (and printed), those of
good runs deleted unless `--keep`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SEEDS = 10
RUN_TIMEOUT = 240.0
"""Seconds one run may take before it counts as failed (a hang is a finding too)."""


@dataclass
class Tally:
    name: str
    runs: int = 0
    mutations: int = 0
    lost: int = 0
    doubled: int = 0
    resurrected: int = 0
    failures: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, other: Tally) -> None:
        self.runs += other.runs
        self.mutations += other.mutations
        self.lost += other.lost
        self.doubled += other.doubled
        self.resurrected += other.resurrected
        self.failures += other.failures
        self.seconds += other.seconds


def plan(names: list[str], seeds: int, only: bool) -> list[tuple[str, int]]:
    """(scenario, number of runs) for each scenario to run."""
    from tests.e2e.faults import SCENARIOS

    return [
        (name, seeds if only else max(1, round(seeds * SCENARIOS[name].share))) for name in names
    ]


async def _soak(
    work: list[tuple[str, int]], first_seed: int, root: Path, keep: bool
) -> list[Tally]:
    from tests.e2e.faults import Env, Postgres, cheap_replica_keys, run_scenario

    postgres = Postgres.start(root / "postgres")
    tallies = []
    with cheap_replica_keys():
        for name, runs in work:
            tally = Tally(name)
            database = f"soak_{name}"
            env = Env(postgres, postgres.database(database), root / name)
            started = time.monotonic()
            try:
                for seed in range(first_seed, first_seed + runs):
                    begun = time.monotonic()
                    try:
                        result = await asyncio.wait_for(run_scenario(name, seed, env), RUN_TIMEOUT)
                    except TimeoutError:
                        from tests.e2e.faults import ScenarioResult

                        result = ScenarioResult(problems=[f"timed out after {RUN_TIMEOUT:g} s"])
                    tally.runs += 1
                    tally.mutations += result.mutations
                    tally.lost += result.lost
                    tally.doubled += result.doubled
                    tally.resurrected += result.resurrected
                    if not result.ok:
                        tally.failures.append(seed)
                        print(
                            f"FAILED {name} seed {seed} ({time.monotonic() - begun:.1f} s): "
                            + "; ".join(result.problems[:6]),
                            file=sys.stderr,
                            flush=True,
                        )
                        for note in result.notes:
                            print(f"    note: {note}", file=sys.stderr, flush=True)
                    elif os.environ.get("SOAK_VERBOSE"):
                        print(
                            f"ok {name} seed {seed} ({time.monotonic() - begun:.1f} s, "
                            f"{result.mutations} mutations): {'; '.join(result.notes)}",
                            file=sys.stderr,
                            flush=True,
                        )
            finally:
                env.close()
                tally.seconds = time.monotonic() - started
            if not tally.failures and not keep:
                postgres.drop(database)
                shutil.rmtree(root / name, ignore_errors=True)
            tallies.append(tally)
            print(
                f"{name}: {tally.runs} runs, {tally.mutations} mutations, "
                f"{len(tally.failures)} failed, {tally.seconds:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    postgres.stop()
    return tallies


def _job(work: list[tuple[str, int]], first_seed: int, root: str, keep: bool) -> list[Tally]:
    os.environ.setdefault("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    return asyncio.run(_soak(work, first_seed, Path(root), keep))


def table(tallies: list[Tally]) -> str:
    header = ("scenario", "runs", "mutations", "lost", "doubled", "resurrected", "failures", "s")
    rows = []
    total = Tally("total")
    for tally in tallies:
        total.add(tally)
    for tally in [*tallies, total]:
        failed = str(len(tally.failures))
        if tally.failures and tally.name != "total":
            seeds = ", ".join(map(str, tally.failures[:8]))
            failed += f" (seeds {seeds}{', ...' if len(tally.failures) > 8 else ''})"
        rows.append(
            (
                tally.name,
                f"{tally.runs:,}",
                f"{tally.mutations:,}",
                str(tally.lost),
                str(tally.doubled),
                str(tally.resurrected),
                failed,
                f"{tally.seconds:.0f}",
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    for number, row in enumerate(rows):
        if number == len(rows) - 1:
            lines.append("  ".join("-" * w for w in widths))
        lines.append(
            "  ".join(
                c.ljust(w) if i in {0, 6} else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from tests.e2e.faults import SCENARIOS

    parser = argparse.ArgumentParser(prog="soak", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seeds",
        type=int,
        default=DEFAULT_SEEDS,
        help=f"seed units (default {DEFAULT_SEEDS}): round(N * share) runs per scenario",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario, N seeds (repeatable)",
    )
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep every run's files")
    args = parser.parse_args(argv)
    names = args.scenario or list(SCENARIOS)
    work = plan(names, args.seeds, bool(args.scenario))
    root = Path(tempfile.mkdtemp(prefix="fleetgate-soak-"))
    print(
        f"soak: {sum(n for _, n in work):,} runs of {len(work)} scenarios, seeds from "
        f"{args.first_seed}, work in {root}",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    jobs = max(1, min(args.jobs, len(work)))
    if jobs == 1:
        tallies = _job(work, args.first_seed, str(root / "job-1"), args.keep)
    else:
        # Longest first, each to the job with the least work so far: they end together.
        shares: list[list[tuple[str, int]]] = [[] for _ in range(jobs)]
        loads = [0.0] * jobs
        for name, runs in sorted(work, key=lambda w: -w[1] * SCENARIOS[w[0]].seconds):
            least = loads.index(min(loads))
            shares[least].append((name, runs))
            loads[least] += runs * SCENARIOS[name].seconds
        with ProcessPoolExecutor(jobs) as pool:
            futures = [
                pool.submit(_job, share, args.first_seed, str(root / f"job-{n + 1}"), args.keep)
                for n, share in enumerate(shares)
            ]
            by_name = {t.name: t for f in futures for t in f.result()}
        tallies = [by_name[name] for name, _ in work]
    print(table(tallies))
    print(f"{time.monotonic() - started:.0f} s in all", file=sys.stderr)
    bad = any(t.lost or t.doubled or t.resurrected or t.failures for t in tallies)
    if not bad and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"files kept in {root}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
