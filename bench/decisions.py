"""Decision benchmark: Fleetgate's engine beside pycasbin and cedarpy, same run.

    python3 dev.py bench [--users 50000 --roles 1000 --requests 200000]

Prints, for a generated tenant (bench/tenant.py: 1,000 roles, 50,000 users,
8 regions, ~30 % conditional rules, ~5 % denies) and 200,000 requests:

- load + compile time of the policy file;
- in-process latency per decision, p50/p99/p99.9: each request is parsed just
  before it is decided, as a service would receive it, and only `decide` is
  timed; the first pass over the requests (cold caches) is reported apart from
  the median of three later passes (a service that has been running);
- in-process throughput (`decide_many` over the parsed requests);
- one-change update time (`apply_edit` + `Engine.refresh`) for grants added
  and removed, assignments added and removed, against a full recompile;
- `fleetgate check --requests` as a subprocess, JSON in and out, with one
  process and with every usable core: decisions/s while deciding (its
  `--timings` line) and end to end, policy load included;
- the peers on a sample of the same requests (pycasbin is ~1000x slower, so
  it decides a smaller sample), with the ratio to Fleetgate's in-process
  rate and each peer's agreement with Fleetgate's decisions.

Figures go to standard output and to bench/out/results.json. Nothing here is
a pass/fail test; the numbers are read and quoted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from app.batch import usable_cores
from app.policy_files import gc_paused, load_policy_file
from bench.harness import print_rows
from bench.tenant import benchmark_folder
from sync.policy.edits import AddRule, AssignRole, Edit, EditRefused, RemoveRule, UnassignRole
from sync.policy.engine import Engine
from sync.policy.instant import parse_instant
from sync.policy.model import Effect, Rule
from sync.policy.request import parse_request

OUT = Path(__file__).resolve().parent / "out"
NOW = parse_instant("2026-11-22T12:00:00Z")


def _percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def _prepare(args: argparse.Namespace) -> Path:
    return benchmark_folder(OUT, args.roles, args.users, args.requests, args.seed)


def _load(folder: Path) -> tuple[Engine, dict[str, float]]:
    started = time.perf_counter()
    policy = load_policy_file(folder / "policy.json", now=NOW)
    loaded = time.perf_counter()
    with gc_paused():
        engine = Engine(policy)
    compiled = time.perf_counter()
    return engine, {"load_s": loaded - started, "compile_s": compiled - loaded}


ROUNDS = 3
"""Rounds of each timed measurement; the median round is reported (this runs on
shared virtual machines, where one round can be half as fast as the next)."""


def _timed_pass(engine: Engine, lines: list[bytes]) -> list[int]:
    """Nanoseconds per `decide`, each request parsed just before (not timed)."""
    clock = time.perf_counter_ns
    decide = engine.decide
    samples: list[int] = []
    for line in lines:
        request = parse_request(orjson.loads(line))
        start = clock()
        decide(request, NOW)
        samples.append(clock() - start)
    samples.sort()
    return samples


def _latency(engine: Engine, lines: list[bytes]) -> dict[str, Any]:
    clock = time.perf_counter_ns
    overhead = []
    for _ in range(20_000):
        start = clock()
        overhead.append(clock() - start)
    base = statistics.median(overhead)
    # The first pass meets every user and role set for the first time (the
    # engine fills its per-role-set caches lazily); a service that has run
    # for a while is in the state of the later rounds.
    cold = _timed_pass(engine, lines)
    rounds: list[dict[str, float]] = []
    for _ in range(ROUNDS):
        samples = _timed_pass(engine, lines)
        requests = [parse_request(orjson.loads(line)) for line in lines]
        started = time.perf_counter()
        decisions = engine.decide_many(requests, NOW)
        elapsed = time.perf_counter() - started
        rounds.append(
            {
                "p50_us": (_percentile(samples, 0.50) - base) / 1000,
                "p99_us": (_percentile(samples, 0.99) - base) / 1000,
                "p999_us": (_percentile(samples, 0.999) - base) / 1000,
                "in_process_per_s": len(requests) / elapsed,
            }
        )
    result: dict[str, Any] = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    result["p99_us_rounds"] = [round(r["p99_us"], 2) for r in rounds]
    result["cold_p50_us"] = (_percentile(cold, 0.50) - base) / 1000
    result["cold_p99_us"] = (_percentile(cold, 0.99) - base) / 1000
    result["timer_overhead_ns"] = base
    result["allowed_fraction"] = sum(d.allowed for d in decisions) / len(decisions)
    return result


def _edits(engine: Engine, count: int, seed: int) -> list[Edit]:
    rng = random.Random(seed)
    policy = engine.policy
    role_ids = list(policy.roles)
    user_ids = list(policy.users)
    types = list(policy.resource_types)
    edits: list[Edit] = []
    for i in range(count):
        role_id = rng.choice(role_ids)
        kind = i % 4
        if kind == 0:
            resource = rng.choice(types)
            action = rng.choice(policy.resource_types[resource])
            rule = Rule.build(resource, (action,), {"resource.region": "$user.region"})
            edits.append(AddRule(f"role:{role_id}", Effect.GRANT, rule))
        elif kind == 1:
            role = policy.roles[role_id]
            if role.grants:
                edits.append(RemoveRule(f"role:{role_id}", Effect.GRANT, role.grants[0]))
        elif kind == 2:
            edits.append(AssignRole(rng.choice(user_ids), role_id, "2027-01-01T00:00:00Z"))
        else:
            user = policy.users[rng.choice(user_ids)]
            if user.roles:
                edits.append(UnassignRole(user.id, user.roles[0].role_id))
    return edits


def _updates(engine: Engine, lines: list[bytes]) -> dict[str, float]:
    edits = _edits(engine, 400, 7)
    probes = [parse_request(orjson.loads(line)) for line in lines[:2000]]
    applied: list[float] = []
    next_decision: list[float] = []
    refused = 0
    for i, edit in enumerate(edits):
        started = time.perf_counter()
        try:
            engine.apply(edit, NOW)
        except EditRefused:  # a constraint may refuse a random assignment
            refused += 1
            continue
        applied.append(time.perf_counter() - started)
        probe = probes[i % len(probes)]
        started = time.perf_counter()
        engine.decide(probe, NOW)
        next_decision.append(time.perf_counter() - started)
    applied.sort()
    started = time.perf_counter()
    with gc_paused():
        Engine(engine.policy)
    recompile = time.perf_counter() - started
    return {
        "update_p50_ms": _percentile(applied, 0.5) * 1000,
        "update_p99_ms": _percentile(applied, 0.99) * 1000,
        "update_max_ms": applied[-1] * 1000,
        "first_decision_after_update_p50_us": statistics.median(next_decision) * 1e6,
        "edits_applied": len(applied),
        "edits_refused": refused,
        "full_recompile_ms": recompile * 1000,
    }


_TIMINGS = re.compile(
    r"policy read in ([0-9.]+) s, compiled in ([0-9.]+) s; ([0-9,]+) decisions in ([0-9.]+) s"
)


YAML_SLICE_USERS = 5000
"""Users of the document the pure-Python YAML parser is timed on beside the C one (the
whole tenant takes the pure parser half a minute)."""


def _yaml(folder: Path, engine: Engine) -> dict[str, Any]:
    """The bench policy written and read back as YAML, as `fleetgate` and the app do it
    (PyYAML's C emitter and parser where the wheel has them), and the C parser beside
    PyYAML's pure-Python one on a slice of the same document."""
    import yaml

    from sync.policy.document import dump_policy, safe_loader_class

    started = time.perf_counter()
    text = dump_policy(engine.policy, yaml_syntax=True)
    dumped = time.perf_counter()
    path = folder / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    with gc_paused():
        written = time.perf_counter()
        load_policy_file(path, now=NOW)
        loaded = time.perf_counter()
    document = yaml.load(text, Loader=safe_loader_class())
    document["users"] = document["users"][:YAML_SLICE_USERS]
    piece = yaml.dump(document, Dumper=yaml.SafeDumper, sort_keys=False)
    parsers = {"c": safe_loader_class(), "pure_python": yaml.SafeLoader}
    seconds = {}
    for name, loader in parsers.items():
        begun = time.perf_counter()
        yaml.load(piece, Loader=loader)
        seconds[name] = time.perf_counter() - begun
    return {
        "yaml_bytes": len(text.encode()), "yaml_write_s": dumped - started,
        "yaml_load_s": loaded - written, "yaml_c_parser": parsers["c"] is not yaml.SafeLoader,
        "yaml_slice_users": YAML_SLICE_USERS, "yaml_slice_c_s": seconds["c"],
        "yaml_slice_pure_s": seconds["pure_python"],
    }  # fmt: skip


def _cli(folder: Path, jobs: int) -> dict[str, Any]:
    """`fleetgate check --requests` as a user runs it, `--timings` splitting its wall time."""
    command = [
        sys.executable, "-m", "app.cli", "check", "--timings", "--jobs", str(jobs),
        "--policy", str(folder / "policy.json"), "--requests", str(folder / "requests.jsonl"),
    ]  # fmt: skip
    walls: list[float] = []
    rates: list[float] = []
    startups: list[float] = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        done = subprocess.run(
            command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        walls.append(time.perf_counter() - started)
        match = _TIMINGS.search(done.stderr.decode())
        assert match is not None, done.stderr
        startups.append(float(match[1]) + float(match[2]))
        rates.append(int(match[3].replace(",", "")) / float(match[4]))
        count = int(match[3].replace(",", ""))
    wall = statistics.median(walls)
    return {
        "jobs": jobs,
        "wall_s": wall,
        "end_to_end_per_s": count / wall,
        "load_compile_s": statistics.median(startups),
        "deciding_per_s": statistics.median(rates),
        "deciding_per_s_rounds": [round(r) for r in rates],
    }


def _peers(
    folder: Path,
    engine: Engine,
    lines: list[bytes],
    fleetgate_rate: float,
    casbin_n: int,
    cedar_n: int,
) -> dict[str, Any]:
    from bench.peers import CasbinPeer, CedarPeer

    policy = json.loads((folder / "policy.json").read_bytes())
    results: dict[str, Any] = {}
    for name, factory, sample in (
        ("pycasbin", CasbinPeer, casbin_n),
        ("cedarpy", CedarPeer, cedar_n),
    ):
        documents = [orjson.loads(line) for line in lines[:sample]]
        started = time.perf_counter()
        peer = factory(policy)
        built = time.perf_counter() - started
        started = time.perf_counter()
        answers = peer.decide_batch(documents)
        elapsed = time.perf_counter() - started
        ours = [engine.decide(parse_request(d), NOW).allowed for d in documents]
        rate = len(documents) / elapsed
        results[name] = {
            "build_s": built,
            "sample": len(documents),
            "per_s": rate,
            "fleetgate_is_faster_by": fleetgate_rate / rate,
            "agreement": sum(a == b for a, b in zip(answers, ours, strict=True)) / len(ours),
        }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 dev.py bench", description=__doc__)
    parser.add_argument("--roles", type=int, default=1000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--casbin-sample", type=int, default=500)
    parser.add_argument("--cedar-sample", type=int, default=10_000)
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    folder = _prepare(args)
    lines = (folder / "requests.jsonl").read_bytes().splitlines()

    results: dict[str, Any] = {
        "tenant": folder.name,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    engine, timings = _load(folder)
    results.update(timings)
    gc.collect()
    gc.freeze()  # the policy lives as long as the process, as in the server and app
    results.update(_latency(engine, lines))
    results["cli"] = [_cli(folder, 1)]
    if usable_cores() > 1:
        results["cli"].append(_cli(folder, usable_cores()))
    if not args.no_peers:
        results["peers"] = _peers(
            folder,
            engine,
            lines,
            results["in_process_per_s"],
            args.casbin_sample,
            args.cedar_sample,
        )
    results.update(_yaml(folder, engine))
    engine, _ = _load(folder)
    results.update(_updates(engine, lines))
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _print(results)
    return 0


def _print(results: dict[str, Any]) -> None:
    print(f"\nFleetgate decision benchmark: {results['tenant']} (Python {results['python']})")
    rows = [
        ("load policy file", f"{results['load_s']:.2f} s"),
        ("compile", f"{results['compile_s']:.2f} s"),
        ("load + compile", f"{results['load_s'] + results['compile_s']:.2f} s   (goal <= 2 s)"),
        ("decide p50", f"{results['p50_us']:.2f} us"),
        (
            "decide p99",
            f"{results['p99_us']:.2f} us   (goal <= 10 us; rounds {results['p99_us_rounds']})",
        ),
        ("decide p99.9", f"{results['p999_us']:.2f} us"),
        (
            "decide, first pass (cold)",
            f"p50 {results['cold_p50_us']:.2f} us, p99 {results['cold_p99_us']:.2f} us",
        ),
        ("in-process decisions/s", f"{results['in_process_per_s']:,.0f}"),
        ("allowed", f"{results['allowed_fraction']:.1%}"),
        ("one-change update p50", f"{results['update_p50_ms']:.3f} ms"),
        ("one-change update p99", f"{results['update_p99_ms']:.3f} ms   (goal <= 1 ms)"),
        ("one-change update max", f"{results['update_max_ms']:.3f} ms"),
        ("first decision after update", f"{results['first_decision_after_update_p50_us']:.1f} us"),
        ("full recompile", f"{results['full_recompile_ms']:.0f} ms"),
        ("policy as YAML", f"written in {results['yaml_write_s']:.2f} s "
                           f"({results['yaml_bytes'] / 1e6:.1f} MB), read and validated in "
                           f"{results['yaml_load_s']:.2f} s"
                           + ("" if results["yaml_c_parser"] else " (no C parser here)")),
        (f"  YAML parse, {results['yaml_slice_users']:,} users",
         f"C {results['yaml_slice_c_s']:.2f} s, pure Python {results['yaml_slice_pure_s']:.2f} s: "
         f"x{results['yaml_slice_pure_s'] / results['yaml_slice_c_s']:.1f}"),
    ]  # fmt: skip
    for cli in results["cli"]:
        rounds = cli["deciding_per_s_rounds"]
        rows.append(
            (
                f"fleetgate check, --jobs {cli['jobs']}",
                f"{cli['deciding_per_s']:,.0f} decisions/s with JSON in and out (goal >= 150,000;"
                f" rounds {rounds}); end to end {cli['end_to_end_per_s']:,.0f}/s"
                f" in {cli['wall_s']:.2f} s, of which {cli['load_compile_s']:.2f} s"
                " reading and compiling the policy",
            )
        )
    for name, peer in results.get("peers", {}).items():
        rows.append(
            (
                f"{name} (sample {peer['sample']:,})",
                f"{peer['per_s']:,.0f} decisions/s; "
                f"Fleetgate x{peer['fleetgate_is_faster_by']:,.0f}; "
                f"agrees on {peer['agreement']:.1%}",
            )
        )
    print_rows(rows)


if __name__ == "__main__":
    sys.exit(main())
