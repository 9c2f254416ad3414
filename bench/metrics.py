"""The headline figures of a run, picked out of the workload's full details in the order
the comparison table shows them, each knowing which direction is better."""

from __future__ import annotations

from dataclasses import dataclass

from bench.scale import Scale

MB = 1_000_000


@dataclass(frozen=True)
class Metric:
    """One headline figure; `higher_is_better` None means informational (no ratio)."""

    name: str
    label: str
    value: float
    unit: str
    higher_is_better: bool | None


def headline_metrics(details: dict, scale: Scale) -> list[Metric]:
    metrics: list[Metric] = []
    for phase, label in (
        ("64x64_c1", "STOW 64×64, 1 client"),
        ("64x64_cN", f"STOW 64×64, {scale.concurrency} clients"),
        ("512x512_c1", "STOW 512×512, 1 client"),
        ("512x512_cN", f"STOW 512×512, {scale.concurrency} clients"),
    ):
        stow = details["stow"][phase]
        metrics += [
            Metric(f"stow_{phase}_ips", label, stow["instances_per_second"], "inst/s", True),
            Metric(f"stow_{phase}_mbps", label, stow["megabytes_per_second"], "MB/s", True),
        ]
    for phase, size in (("64x64_cN", "64×64"), ("512x512_cN", "512×512")):
        metrics += _processor_time(phase, f"STOW {size}, {scale.concurrency} clients", details["stow"][phase])
    if "disk_ceiling" in details:  # measured by bench.disk just before this target started
        ceiling = details["disk_ceiling"]["megabytes_per_second"]
        share = details["stow"]["512x512_cN"]["megabytes_per_second"] / ceiling * 100 if ceiling else 0.0
        metrics += [
            Metric("disk_ceiling_mbps", "disk durable-write ceiling, just before", ceiling, "MB/s", None),
            Metric("stow_512_share_of_disk", f"STOW 512×512, {scale.concurrency} clients, of it", share, "%", None),
        ]
    metrics.append(
        Metric("instances_indexed", "instances stored before the queries",
               details["instances_indexed"], "inst", None)
    )  # fmt: skip
    for name, label in (
        ("studies_limit_100", "QIDO studies?limit=100"),
        ("studies_by_patient_id", "QIDO studies?PatientID="),
        ("studies_by_date_range", "QIDO studies?StudyDate=range"),
    ):
        metrics += _latency(f"qido_{name}", label, details["qido"][name])
    for name, instances, size in (
        ("small_study", scale.metadata_small_instances, "64×64"),
        ("large_study", scale.metadata_large_instances, "64×64"),
        ("ct_study", scale.large_study_instances, "512×512"),
    ):
        label = f"metadata, {instances}-instance {size} study"
        metrics += _latency(f"metadata_{name}", label, details["metadata"][name])
    retrieve = details["retrieve"]["megabytes_per_second"]
    metrics.append(Metric("wado_study_mbps", "WADO-RS study, 512×512", retrieve, "MB/s", True))
    metrics += _latency("frame", "WADO-RS frames/1, 512×512", details["frames"])
    if "peak_rss_bytes" in details:
        peak = details["peak_rss_bytes"] / MB
        metrics.append(Metric("peak_rss_mb", "server peak RSS", peak, "MB", False))
    return metrics


def _processor_time(phase: str, label: str, stow: dict) -> list[Metric]:
    """The server's processor time per stored instance, and how busy the machine's cores were
    (bench.cpu): near 100 %, the cores, not the disk, bound the phase."""
    cpu, stored = stow.get("cpu") or {}, stow["instances_stored"]
    found = []
    if cpu.get("server_seconds") is not None and stored:
        found.append(Metric(f"stow_{phase}_server_cpu_ms", f"{label}: server CPU per instance",
                            cpu["server_seconds"] * 1000 / stored, "ms", False))
    if cpu:
        found.append(Metric(f"stow_{phase}_machine_busy", f"{label}: cores busy (server and clients)",
                            cpu["machine_busy_share"] * 100, "%", None))
    return found


def _latency(name: str, label: str, result: dict) -> list[Metric]:
    return [
        Metric(f"{name}_p50", f"{label} p50", result["p50_ms"], "ms", False),
        Metric(f"{name}_p95", f"{label} p95", result["p95_ms"], "ms", False),
    ]


def problems(details: dict) -> list[str]:
    """What makes a target's figures suspect: failed requests and loops cut by time."""
    found = []
    for phase, stow in details["stow"].items():
        if stow["failed_requests"]:
            found.append(f"STOW {phase}: {stow['failed_requests']} failed ({stow['statuses']})")
        if stow["timed_out"]:
            found.append(f"STOW {phase}: stopped by its time bound")
    latencies = {
        **{f"QIDO {name}": result for name, result in details["qido"].items()},
        **{f"metadata {name}": result for name, result in details["metadata"].items()},
        "frames": details["frames"],
        "WADO study": details["retrieve"]["latency"],
    }
    for name, result in latencies.items():
        if result["errors"]:
            found.append(f"{name}: {result['errors']} errors ({result['statuses']})")
    return found
