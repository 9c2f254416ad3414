"""`python -m bench.compare`: the workload against Orthanc, OIX on SQLite and OIX on
PostgreSQL in one run, a table of ratios, and a JSON record under bench/results/."""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, replace
from functools import partial

from bench.disk import durable_write_ceiling
from bench.metrics import Metric, problems
from bench.oix_server import running_oix, running_oix_on_postgres
from bench.orthanc import installed_versions, running_orthanc
from bench.report import REFERENCE_TARGET, comparison_table, write_results
from bench.scale import FULL, QUICK
from bench.server_process import ServerExited, ServerUnderTest
from bench.studies import make_bench_studies
from bench.workload import run_workload

log = logging.getLogger("bench")

TARGETS: dict[str, Callable[[bool], AbstractContextManager[ServerUnderTest]]] = {
    "orthanc": lambda keep: running_orthanc(keep_dir=keep),
    "oix-sqlite": lambda keep: running_oix(keep_dir=keep),
    "oix-pg": lambda keep: running_oix_on_postgres(keep_dir=keep),
    # The same server with the audit trail off (a declared demo): the reference for its cost.
    "oix-sqlite-audit-off": lambda keep: running_oix(keep_dir=keep, audit=False),
}
DEFAULT_TARGETS = ("orthanc", "oix-sqlite", "oix-pg")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description="DICOMweb benchmark: OIX against Orthanc, or the workload alone against "
        "any DICOMweb service root.",
    )
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma-separated, from {', '.join(TARGETS)} (default: {','.join(DEFAULT_TARGETS)})",
    )
    parser.add_argument(
        "--reference",
        default=REFERENCE_TARGET,
        help=f"the target the others are compared with (default: {REFERENCE_TARGET})",
    )
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument(
        "--root", help="run the workload alone against this DICOMweb service root URL"
    )
    parser.add_argument("--pid", type=int, help="with --root: the server's pid, for peak RSS and processor time")
    parser.add_argument(
        "--keep", action="store_true", help="keep the servers' data directories and logs"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the targets this many times, every other round in reverse order, and report "
        "each figure's mean: the target run first or second gains nothing by it",
    )
    arguments = parser.parse_args(argv)
    unknown = set(arguments.targets.split(",")) - set(TARGETS)
    if unknown and not arguments.root:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    return arguments


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    arguments = parse_arguments(argv)
    scale = QUICK if arguments.quick else FULL
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")

    if arguments.root:
        targets: dict[str, Callable[[], AbstractContextManager[ServerUnderTest]]] = {
            "root": lambda: nullcontext(ServerUnderTest("root", arguments.root, arguments.pid))
        }
    else:
        targets = {
            name: partial(TARGETS[name], arguments.keep) for name in arguments.targets.split(",")
        }

    started = time.perf_counter()
    log.info("generating the %s corpus (before any timing)", scale.name)
    studies = make_bench_studies(scale)
    log.info("corpus ready in %.0f s", time.perf_counter() - started)

    record: dict = {
        "started": stamp,
        "scale": scale.name,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "targets": {},
    }
    if "orthanc" in targets:
        record["orthanc_packages"] = installed_versions()
    rounds: dict[str, list[list[Metric]]] = {}
    order = list(targets.items())
    schedule = [entry for number in range(max(1, arguments.rounds))
                for entry in (order if number % 2 == 0 else order[::-1])]
    for name, start_server in schedule:
        # What the previous target wrote is flushed first, so that no target's fsyncs wait
        # behind another's writeback; nothing is removed until the end (bench/leftovers.py).
        os.sync()
        target_started = time.perf_counter()
        log.info("== %s", name)
        ceiling = None if arguments.root else disk_ceiling(studies, scale)
        try:
            with start_server() as server:
                log.info("%s up, DICOMweb root %s", name, server.dicomweb_root)
                metrics, details = run_workload(server, studies, scale, ceiling)
        except ServerExited as error:
            log.error("%s", error)
            record["targets"][name] = {"error": f"{error}", "details": error.details}
            continue
        except Exception as error:  # one target failing must not lose the others' results
            log.error("%s failed: %s", name, error)
            record["targets"][name] = {"error": f"{error}", "traceback": traceback.format_exc()}
            continue
        rounds.setdefault(name, []).append(metrics)
        details["wall_seconds"] = time.perf_counter() - target_started
        result = record["targets"].setdefault(name, {"rounds": []})
        result["rounds"].append({"metrics": [asdict(metric) for metric in metrics], "details": details})
        result["details"] = details
        log.info("%s done in %.0f s", name, details["wall_seconds"])

    metrics_by_target = {name: mean_metrics(runs) for name, runs in rounds.items()}
    for name, metrics in metrics_by_target.items():
        record["targets"][name]["metrics"] = [asdict(metric) for metric in metrics]
    record["wall_seconds"] = time.perf_counter() - started
    print()
    print(f"DICOMweb benchmark, {scale.name} scale, {os.cpu_count()} CPUs, {stamp}")
    if metrics_by_target:
        print(comparison_table(metrics_by_target, arguments.reference))
    clean = True
    for name, result in record["targets"].items():
        if "error" in result:
            print(f"{name}: FAILED: {result['error']}")
            clean = False
            continue
        for problem in problems(result["details"]):
            print(f"{name}: {problem}")
            clean = False
    path = write_results(record, stamp)
    print(f"\nresults: {path}")
    return 0 if clean else 1


def disk_ceiling(studies, scale) -> dict:
    """bench.disk's ceiling for the CT-size STOW phase: its concurrency, instances per request
    and instance size (the request bodies' bytes per instance), and its bounds."""
    sample = studies.large_requests[0]
    ceiling = durable_write_ceiling(len(sample.body) // len(sample.instances), scale.instances_per_request,
                                    scale.concurrency, scale.stow_large_concurrent)
    log.info("disk durable-write ceiling %.0f MB/s (%d × %d files of %d bytes, %d writers)",
             ceiling.megabytes_per_second, ceiling.batches, ceiling.files_per_batch, ceiling.file_bytes,
             ceiling.writers)
    return {**asdict(ceiling), "megabytes_per_second": ceiling.megabytes_per_second,
            "files_per_second": ceiling.files_per_second}


def mean_metrics(runs: list[list[Metric]]) -> list[Metric]:
    """Each figure's mean over the rounds a target ran."""
    return [replace(first, value=sum(run[index].value for run in runs) / len(runs))
            for index, first in enumerate(runs[0])]


if __name__ == "__main__":
    sys.exit(main())
