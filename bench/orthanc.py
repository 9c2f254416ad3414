"""Orthanc with its DICOMweb plugin as the reference server: installed from the Debian
packages if missing, started by us on loopback with a configuration we write."""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.debian import install_debian_packages
from bench.leftovers import remove_at_exit
from bench.server_process import ServerUnderTest, free_port, stop, wait_until_ready

log = logging.getLogger("bench")

DEBIAN_PACKAGES = ["orthanc", "orthanc-dicomweb"]
ORTHANC_EXECUTABLE = "Orthanc"
DICOMWEB_PLUGIN_PATTERNS = [
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so*",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
    "/usr/lib/*/orthanc/libOrthancDicomWeb.so*",
]


def orthanc_executable() -> str | None:
    return shutil.which(ORTHANC_EXECUTABLE) or (
        "/usr/sbin/Orthanc" if os.access("/usr/sbin/Orthanc", os.X_OK) else None
    )


def dicomweb_plugin() -> str | None:
    for pattern in DICOMWEB_PLUGIN_PATTERNS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def ensure_installed() -> tuple[str, str]:
    """The Orthanc executable and the DICOMweb plugin, installing the Debian packages first
    if either is missing."""
    executable, plugin = orthanc_executable(), dicomweb_plugin()
    if executable and plugin:
        return executable, plugin
    install_debian_packages(DEBIAN_PACKAGES)
    executable, plugin = orthanc_executable(), dicomweb_plugin()
    if not (executable and plugin):
        raise RuntimeError(
            "Orthanc or its DICOMweb plugin is missing after "
            f"`apt-get install {' '.join(DEBIAN_PACKAGES)}`"
        )
    return executable, plugin


def orthanc_configuration(work_dir: Path, http_port: int, plugin: str) -> dict:
    """Loopback only, no authentication, SQLite index and files under `work_dir`, fsync on
    every stored file (Orthanc's default since 1.7.4, stated so the comparison is explicit)."""
    return {
        "Name": "OIX benchmark reference",
        "StorageDirectory": str(work_dir / "storage"),
        "IndexDirectory": str(work_dir / "index"),
        "StorageCompression": False,
        "SyncStorageArea": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "DicomPort": free_port(),
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
    }


@contextmanager
def running_orthanc(keep_dir: bool = False) -> Iterator[ServerUnderTest]:
    """A fresh Orthanc on a free loopback port; stopped and its storage removed on exit."""
    executable, plugin = ensure_installed()
    work_dir = Path(tempfile.mkdtemp(prefix="oix-bench-orthanc-"))
    port = free_port()
    config_path = work_dir / "orthanc.json"
    config_path.write_text(json.dumps(orthanc_configuration(work_dir, port, plugin), indent=2))
    log_path = work_dir / "orthanc.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [executable, str(config_path)],
            cwd=work_dir,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    failed = False
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(process, f"{base}/system", log_path)
        yield ServerUnderTest("orthanc", f"{base}/dicom-web", process.pid)
    except BaseException:
        failed = True
        raise
    finally:
        stop(process)
        if keep_dir or failed:
            log.info("Orthanc's files and log kept in %s", work_dir)
        else:
            remove_at_exit(work_dir)


def installed_versions() -> dict[str, str]:
    """Debian package versions, recorded with the results."""
    completed = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *DEBIAN_PACKAGES],
        capture_output=True,
        text=True,
        check=False,
    )
    return dict(line.split(" ", 1) for line in completed.stdout.splitlines() if " " in line)
