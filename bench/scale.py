"""How big a benchmark run is: the corpus it stores and the count and wall-time bound of
every measurement loop. FULL keeps three targets under ~15 minutes on two cores even when
every loop runs into its time bound (about 6 minutes for a slow target)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.timing import Budget


@dataclass(frozen=True)
class Scale:
    name: str
    # Corpus (64×64 studies: 20-instance query studies plus two metadata studies).
    instances_per_request: int
    query_studies: int
    studies_per_patient: int
    metadata_small_instances: int
    metadata_large_instances: int
    # The metadata studies come in series of this many instances (a CT has a few series).
    metadata_series_size: int
    # 512×512 studies of one series of this many instances; the first is retrieved.
    large_study_instances: int
    # Loop bounds; STOW counts are requests.
    stow_small_sequential: Budget
    stow_small_concurrent: Budget
    stow_large_sequential: Budget
    stow_large_concurrent: Budget
    fill: Budget
    query: Budget
    metadata_small: Budget
    metadata_large: Budget
    retrieve: Budget
    frames: Budget
    concurrency: int = 8

    @property
    def large_requests(self) -> int:
        return self.stow_large_sequential.count + self.stow_large_concurrent.count

    @property
    def small_instances(self) -> int:
        return (
            self.query_studies * self.instances_per_request
            + self.metadata_small_instances
            + self.metadata_large_instances
        )


FULL = Scale(
    name="full",
    instances_per_request=20,
    # 445 × 20 + 100 + 1,000 = 10,000 instances indexed before the queries run.
    query_studies=445,
    studies_per_patient=5,
    metadata_small_instances=100,
    metadata_large_instances=1000,
    metadata_series_size=250,
    large_study_instances=100,
    stow_small_sequential=Budget(count=100, seconds=30),
    stow_small_concurrent=Budget(count=200, seconds=30),
    stow_large_sequential=Budget(count=16, seconds=30),
    stow_large_concurrent=Budget(count=32, seconds=30),
    fill=Budget(count=10_000, seconds=150),
    query=Budget(count=200, seconds=10),
    metadata_small=Budget(count=50, seconds=10),
    metadata_large=Budget(count=20, seconds=25),
    retrieve=Budget(count=10, seconds=15),
    frames=Budget(count=300, seconds=10),
)

QUICK = Scale(
    name="quick",
    instances_per_request=20,
    query_studies=25,
    studies_per_patient=5,
    metadata_small_instances=20,
    metadata_large_instances=100,
    metadata_series_size=50,
    large_study_instances=40,
    stow_small_sequential=Budget(count=5, seconds=10),
    stow_small_concurrent=Budget(count=10, seconds=10),
    stow_large_sequential=Budget(count=2, seconds=10),
    stow_large_concurrent=Budget(count=4, seconds=10),
    fill=Budget(count=1000, seconds=30),
    query=Budget(count=20, seconds=5),
    metadata_small=Budget(count=10, seconds=5),
    metadata_large=Budget(count=5, seconds=10),
    retrieve=Budget(count=3, seconds=10),
    frames=Budget(count=30, seconds=5),
)

SCALES = {scale.name: scale for scale in (FULL, QUICK)}
