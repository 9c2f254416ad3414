"""A real Orthanc with its DICOMweb plugin for the tests, as a PACS that OIX forwards to: installed
from the Debian packages if missing (bench/orthanc.py), on a loopback port and a storage
directory that stay the same when it is stopped (or crashes) and started again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from bench.orthanc import ensure_installed, orthanc_configuration
from bench.server_process import free_port, stop, wait_until_ready


def installed_orthanc() -> tuple[str, str]:
    """Orthanc's executable and DICOMweb plugin. Under CI=true an install that fails fails the
    test; elsewhere the test is skipped, saying why, only if the install is impossible."""
    try:
        return ensure_installed()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        reason = f"Orthanc with its DICOMweb plugin cannot be installed from the Debian packages: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: forwarding must be tested against a real PACS)", pytrace=False)
        pytest.skip(reason)


class Orthanc:
    def __init__(self, work_dir: Path):
        self.executable, self.plugin = installed_orthanc()
        self.work_dir = work_dir
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = work_dir / "orthanc.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_root(self) -> str:
        return f"{self.base_url}/dicom-web"  # bench/orthanc.py's DicomWeb.Root

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start it (again) on the same port, with the same storage and index."""
        if self.running:
            return
        configuration = orthanc_configuration(self.work_dir, self.port, self.plugin)
        configuration["Name"] = "OIX forwarding test PACS"
        config_path = self.work_dir / "orthanc.json"
        config_path.write_text(json.dumps(configuration, indent=2))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([self.executable, str(config_path)], cwd=self.work_dir, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until_ready(self.process, f"{self.base_url}/system", self.log_path)

    def stop(self) -> None:
        """A clean shutdown."""
        if self.process is not None:
            stop(self.process)

    def crash(self) -> None:
        """Freeze it at once (no request in flight gets its answer), then kill it: a PACS that
        goes away mid-way."""
        if self.running:
            self.process.send_signal(signal.SIGSTOP)
            self.process.kill()
            self.process.wait(timeout=15)

    def instance_count(self) -> int:
        return httpx.get(f"{self.base_url}/statistics", timeout=5).json()["CountInstances"]

    def sop_instance_uids(self, study_uid: str) -> list[str]:
        """The SOP Instance UIDs Orthanc holds in `study_uid`, by QIDO-RS (one per instance held)."""
        response = httpx.get(f"{self.dicomweb_root}/studies/{study_uid}/instances", timeout=10)
        if response.status_code in (204, 404):
            return []
        response.raise_for_status()
        return [item["00080018"]["Value"][0] for item in response.json()]

    def instance_bytes(self, sop_instance_uid: str) -> bytes:
        found = httpx.post(f"{self.base_url}/tools/lookup", content=sop_instance_uid, timeout=10).json()
        [orthanc_id] = [item["ID"] for item in found if item["Type"] == "Instance"]
        return httpx.get(f"{self.base_url}/instances/{orthanc_id}/file", timeout=10).content
