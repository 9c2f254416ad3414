"""The `oix` command: organisations added and listed through OIX_DATA_DIR / OIX_DATABASE_URL or
flags (flags win), failures as a message and exit status 1, and administration while a server runs."""

from __future__ import annotations

import os
import subprocess
import threading
from contextlib import ExitStack

import httpx
import pytest

from tests.dicomweb_requests import make_study, referenced_sop_instances
from tests.multipart_body import iter_related_body, new_boundary, stow_content_type
from tests.servers import CLI_TIMEOUT_SECONDS, new_postgresql_database, oix_command


@pytest.fixture
def storage_env(backend, tmp_path):
    """Environment naming an empty data directory and, for PostgreSQL, an empty database."""
    with ExitStack() as stack:
        env = dict(os.environ, OIX_DATA_DIR=str(tmp_path / "data"))
        env.pop("OIX_DATABASE_URL", None)
        if backend == "postgresql":
            env["OIX_DATABASE_URL"] = stack.enter_context(new_postgresql_database())
        yield env


def oix(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*oix_command(), *args], env=env, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_SECONDS)


def test_org_add_and_list_read_the_environment(storage_env):
    added = oix("org", "add", "RJ1", "Guy's and St Thomas'", env=storage_env)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added RJ1\tGuy's and St Thomas'"
    assert oix("org", "add", "8HV48", "Teleradiology Ltd", env=storage_env).returncode == 0
    listed = oix("org", "list", env=storage_env)
    assert listed.returncode == 0
    assert listed.stdout.splitlines() == ["8HV48\tTeleradiology Ltd", "RJ1\tGuy's and St Thomas'"]


def test_org_add_refuses_a_duplicate_with_a_message(storage_env):
    assert oix("org", "add", "RJ1", "First", env=storage_env).returncode == 0
    again = oix("org", "add", "RJ1", "Second", env=storage_env)
    assert again.returncode == 1
    assert "RJ1" in again.stderr and "already exists" in again.stderr
    assert oix("org", "list", env=storage_env).stdout.splitlines() == ["RJ1\tFirst"]


def test_org_add_refuses_an_invalid_code(tmp_path):
    env = dict(os.environ, OIX_DATA_DIR=str(tmp_path / "data"))
    env.pop("OIX_DATABASE_URL", None)
    for slug in ("has space", "_underscore-first", "x" * 65, "semi;colon"):
        refused = oix("org", "add", slug, "Name", env=env)
        assert refused.returncode == 1, slug
        assert "not a valid organisation code" in refused.stderr
    assert oix("org", "list", env=env).stdout == ""


def test_the_data_dir_flag_wins_over_the_environment(tmp_path):
    env = dict(os.environ, OIX_DATA_DIR=str(tmp_path / "from-env"))
    env.pop("OIX_DATABASE_URL", None)
    assert oix("org", "add", "FLAG", "By flag", "--data-dir", str(tmp_path / "from-flag"), env=env).returncode == 0
    assert oix("org", "list", env=env).stdout == ""
    assert oix("org", "list", "--data-dir", str(tmp_path / "from-flag"), env=env).stdout == "FLAG\tBy flag\n"


def test_org_add_while_a_stow_is_being_received_loses_nothing(server, org, http):
    """DESIGN invariant 1: administering a running server (here `oix org add` on its data
    directory) does not disturb an upload in flight; the STOW still stores everything."""
    study = make_study(instances_per_series=2)
    boundary = new_boundary()
    pieces = list(iter_related_body(study.parts, boundary))
    halfway, resume = threading.Event(), threading.Event()

    def body():
        for index, piece in enumerate(pieces):
            if index == len(pieces) // 2:
                halfway.set()
                assert resume.wait(timeout=60)
            yield piece

    result = {}

    def send():
        with httpx.Client(timeout=120) as client:
            result["response"] = client.post(f"{server.root(org)}/studies", content=body(),
                                             headers={"Content-Type": stow_content_type(boundary)})

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert halfway.wait(timeout=60)
        env = dict(os.environ, OIX_DATA_DIR=str(server.data_dir))
        env.pop("OIX_DATABASE_URL", None)
        if server.database_url:
            env["OIX_DATABASE_URL"] = server.database_url
        added = oix("org", "add", f"late-{org}", "Added during an upload", env=env)
        assert added.returncode == 0, added.stderr
    finally:
        resume.set()
        sender.join(timeout=120)
    response = result["response"]
    assert response.status_code == 200, response.text[:300]
    assert sorted(referenced_sop_instances(response.json())) == sorted(study.instances)


@pytest.mark.parametrize(("cpus", "workers", "parsers"), [(1, 2, 1), (2, 3, 1), (3, 4, 1), (8, 4, 1), (None, 2, 1)])
def test_serve_runs_one_worker_more_than_the_cores_up_to_four(monkeypatch, cpus, workers, parsers):
    """`oix serve` without --workers: a worker per core and one more (a store waits on the disk
    and on the index's writer in turn), at most 4; one parser process each on these machines."""
    from oix.settings import Settings

    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    settings = Settings()
    assert (settings.workers, settings.parse_workers) == (workers, parsers)
