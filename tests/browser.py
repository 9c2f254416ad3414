"""The browser the viewer and portal tests drive: Debian's Chromium (installed if missing) under
playwright, npm packages the pages need (the OHIF viewer build, axe-core) fetched by `npm pack`
at pinned versions and checked against their published integrity, screenshots kept as artefacts
under test-artifacts/, and an accessibility check with axe-core."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.debian import install_debian_packages

REPOSITORY = Path(__file__).resolve().parent.parent
ARTEFACTS = REPOSITORY / "test-artifacts"
NPM_CACHE = REPOSITORY / ".test-cache" / "npm"
CHROMIUM_PACKAGES = ["chromium"]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")

# name → (version, the registry's dist.integrity for that version)
NPM_PACKAGES = {
    "@ohif/app": ("3.13.2", "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="),
    "axe-core": ("4.14.1", "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="),
}
NPM_TIMEOUT_SECONDS = 600

# As the machine's own Chromium check runs it: no sandbox as root, and none of the background
# connections a closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def unavailable(reason: str) -> None:
    """Under CI=true a missing prerequisite fails the test; elsewhere it is skipped, saying why."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: browser tests must run)", pytrace=False)
    pytest.skip(reason)


def chromium_executable() -> str:
    found = next((path for path in CHROMIUM_CANDIDATES if os.access(path, os.X_OK)), None)
    if found is None:
        try:
            install_debian_packages(CHROMIUM_PACKAGES)
        except (OSError, subprocess.SubprocessError) as exc:
            unavailable(f"Debian's chromium cannot be installed: {exc}")
        found = next((path for path in CHROMIUM_CANDIDATES if os.access(path, os.X_OK)), None)
    if found is None:
        unavailable(f"no Chromium at {' or '.join(CHROMIUM_CANDIDATES)} after apt-get install chromium")
    return found


def npm_package(name: str) -> Path:
    """The unpacked npm package `name` at its pinned version (its `package/` directory)."""
    version, integrity = NPM_PACKAGES[name]
    target = NPM_CACHE / f"{name.replace('/', '__')}-{version}"
    if (target / "package" / "package.json").exists():
        return target / "package"
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed: the browser tests fetch their npm packages with it")
    download = NPM_CACHE / "downloads"
    download.mkdir(parents=True, exist_ok=True)
    completed = subprocess.run([npm, "pack", f"{name}@{version}", "--pack-destination", str(download), "--silent"],
                               capture_output=True, text=True, timeout=NPM_TIMEOUT_SECONDS)
    if completed.returncode != 0:
        unavailable(f"npm pack {name}@{version} failed: {completed.stderr.strip()[-500:]}")
    archive = download / completed.stdout.strip().splitlines()[-1]
    algorithm, expected = integrity.split("-", 1)
    actual = base64.b64encode(hashlib.new(algorithm, archive.read_bytes()).digest()).decode()
    if actual != expected:
        archive.unlink()
        pytest.fail(f"{name}@{version} does not match its published integrity {integrity}", pytrace=False)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(partial, filter="data")
    archive.unlink()
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target / "package"


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Headless Chromium under playwright (its own browser downloads are never used). One per
    test module: playwright's synchronous API runs an event loop in the test thread while it is
    open, which the asyncio tests of other modules must not find running."""
    executable = chromium_executable()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (make install installs the test extra)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def artefact_path(test_name: str, file_name: str) -> Path:
    """Where a test keeps what it leaves behind (screenshots): test-artifacts/<test>/<file>."""
    directory = ARTEFACTS / test_name.replace("/", "_").replace("::", "__").replace("[", "_").rstrip("]")
    directory.mkdir(parents=True, exist_ok=True)
    return directory / file_name


def accessibility_violations(page, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict]:
    """axe-core's WCAG 2.1 A/AA violations on the page as it is now, of the given impacts."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        # Evaluated through the DevTools protocol, not a <script> tag: the pages' own
        # Content-Security-Policy (script-src 'self') stays on while they are checked.
        page.evaluate((npm_package("axe-core") / "axe.min.js").read_text() + "\n;undefined")
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                       targets: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}));
    }""")
    return [violation for violation in result if violation["impact"] in impacts]


def screenshot_and_check(page, test_name: str, name: str) -> None:
    """Keep a screenshot of the page as it is now (test-artifacts/<test>/<name>.png), then
    assert that axe-core finds no serious or critical WCAG 2.1 A/AA violation on it."""
    page.screenshot(path=str(artefact_path(test_name, f"{name}.png")), full_page=True)
    violations = accessibility_violations(page)
    assert not violations, f"{name}: {violations}"
