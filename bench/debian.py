"""Debian packages the benchmarks and tests run against (Orthanc, Chromium): installed with
apt-get when missing, with one package-list update if the first attempt fails."""

from __future__ import annotations

import os
import subprocess

APT_TIMEOUT_SECONDS = 600


def install_debian_packages(packages: list[str]) -> None:
    """apt-get install `packages`; the caller checks for the files it needs afterwards (a
    package's postinst may fail to start a system service without an init system while the
    files are in place)."""
    if _apt_install(packages) != 0:
        # A fresh container has no package lists; one update, then try again.
        subprocess.run(["apt-get", "update"], check=False, timeout=APT_TIMEOUT_SECONDS)
        _apt_install(packages)


def _apt_install(packages: list[str]) -> int:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    completed = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages], env=env,
                               check=False, timeout=APT_TIMEOUT_SECONDS)
    return completed.returncode
