"""The studies the benchmark stores, made with the synthetic corpus and encoded as STOW-RS
request bodies before any timing starts, so generation is never measured."""

from __future__ import annotations

import datetime
import os
import secrets
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from bench.scale import Scale
from conformance.corpus import (
    OIX_SYNTHETIC_UID_ROOT,
    Patient,
    StudySpec,
    new_uid,
    synthetic_instance,
)
from dicomweb.multipart import encode_related, new_boundary, related_content_type

FIRST_STUDY_DATE = datetime.date(2023, 1, 1)
STUDY_DATE_SPREAD_DAYS = 730
DATE_RANGE_QUERY = "20230301-20230331"


@dataclass(frozen=True)
class InstanceRef:
    study_uid: str
    series_uid: str
    sop_uid: str


@dataclass(frozen=True)
class StowRequest:
    """One STOW-RS request: a multipart/related body of Part 10 instances of one series."""

    body: bytes
    content_type: str
    instances: list[InstanceRef]


@dataclass(frozen=True)
class RequestPlan:
    """What `encode_request` builds in a worker process: consecutive instances of one
    series (picklable, no pixel data yet)."""

    spec: StudySpec
    series_uid: str
    series_number: int
    first_instance_number: int
    sop_uids: list[str]


@dataclass
class BenchStudies:
    """Everything the workload stores, and the identifiers it then asks for."""

    query_requests: list[StowRequest]  # one 20-instance 64×64 study each
    metadata_requests: list[StowRequest]  # the two metadata studies, series by series
    large_requests: list[StowRequest]  # 512×512 series; the first study is retrieved
    metadata_small_study: str
    metadata_large_study: str
    retrieve_study: str
    frame_instances: list[InstanceRef]
    patient_id_query: str
    date_range_query: str = DATE_RANGE_QUERY


def study_uid() -> str:
    # Short enough that corpus-derived UIDs (FrameOfReferenceUID = study UID + ".1") stay
    # within the 64 characters of VR UI (PS3.5 6.2).
    return f"{OIX_SYNTHETIC_UID_ROOT}{10**24 + secrets.randbelow(9 * 10**24)}"


def query_study_spec(index: int, scale: Scale) -> StudySpec:
    """Study `index` of the query corpus: patients with several studies each, dates spread
    over two years, CT and MR, so filtered queries match a realistic handful."""
    patient = index // scale.studies_per_patient
    day = FIRST_STUDY_DATE + datetime.timedelta(days=(index * 37) % STUDY_DATE_SPREAD_DAYS)
    modality = "MR" if index % 3 == 0 else "CT"
    return StudySpec(
        patient=Patient(
            name=f"Bench^Patient{patient:05d}",
            patient_id=f"BENCH{patient:05d}",
            birth_date=f"19{40 + patient % 60:02d}0101",
            sex="F" if patient % 2 else "M",
        ),
        study_uid=study_uid(),
        study_date=day.strftime("%Y%m%d"),
        study_time=f"{8 + index % 10:02d}{index % 60:02d}00",
        accession_number=f"BACC{index:06d}",
        study_description=f"{modality} bench study {index}",
        modality=modality,
        rows=64,
        columns=64,
        instances_per_series=scale.instances_per_request,
        seed=index,
    )


def request_plans(
    spec: StudySpec, instances: int, series_size: int, per_request: int
) -> list[RequestPlan]:
    """`instances` of `spec` in series of `series_size`, sent `per_request` at a time."""
    plans = []
    for series_number, series_start in enumerate(range(0, instances, series_size), start=1):
        series_uid = new_uid()
        series_end = min(series_start + series_size, instances)
        for start in range(series_start, series_end, per_request):
            count = min(per_request, series_end - start)
            sop_uids = [new_uid() for _ in range(count)]
            plans.append(
                RequestPlan(spec, series_uid, series_number, start - series_start + 1, sop_uids)
            )
    return plans


def encode_request(plan: RequestPlan) -> StowRequest:
    parts = [
        synthetic_instance(plan.spec, plan.series_uid, plan.series_number, number, sop_uid)
        for number, sop_uid in enumerate(plan.sop_uids, start=plan.first_instance_number)
    ]
    boundary = new_boundary()
    return StowRequest(
        body=b"".join(encode_related(parts, "application/dicom", boundary)),
        content_type=related_content_type("application/dicom", boundary),
        instances=[
            InstanceRef(plan.spec.study_uid, plan.series_uid, sop_uid) for sop_uid in plan.sop_uids
        ],
    )


def make_bench_studies(scale: Scale, workers: int | None = None) -> BenchStudies:
    per_request = scale.instances_per_request
    # Query studies: one series, one request each.
    query_plans = [
        plan
        for index in range(scale.query_studies)
        for plan in request_plans(
            query_study_spec(index, scale), per_request, per_request, per_request
        )
    ]
    small_spec = query_study_spec(scale.query_studies, scale)
    large_spec = query_study_spec(scale.query_studies + 1, scale)
    metadata_plans = request_plans(
        small_spec, scale.metadata_small_instances, scale.metadata_series_size, per_request
    ) + request_plans(
        large_spec, scale.metadata_large_instances, scale.metadata_series_size, per_request
    )

    # 512×512 studies of one series each; the first is the one WADO-RS retrieves.
    large_plans: list[RequestPlan] = []
    large_index = scale.query_studies + 2
    while len(large_plans) < scale.large_requests:
        spec = query_study_spec(large_index, scale)
        spec.rows = spec.columns = 512
        size = scale.large_study_instances
        large_plans += request_plans(spec, size, size, per_request)
        large_index += 1
    large_plans = large_plans[: scale.large_requests]

    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        query_requests = list(pool.map(encode_request, query_plans, chunksize=8))
        metadata_requests = list(pool.map(encode_request, metadata_plans, chunksize=4))
        large_requests = list(pool.map(encode_request, large_plans))

    return BenchStudies(
        query_requests=query_requests,
        metadata_requests=metadata_requests,
        large_requests=large_requests,
        metadata_small_study=small_spec.study_uid,
        metadata_large_study=large_spec.study_uid,
        retrieve_study=large_plans[0].spec.study_uid,
        frame_instances=large_requests[0].instances,
        patient_id_query=query_plans[0].spec.patient.patient_id,
    )
