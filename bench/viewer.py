"""The built-in viewer's speed: a 300-image 512×512 CT series opened in headless Chromium against
a live `oix serve` on loopback; the times from navigation start to the viewer's performance marks
`oix-first-image` (the first image drawn) and `oix-all-images` (every frame fetched and decoded).
Prints one JSON line. `.venv/bin/python -m bench.viewer [--images 300] [--runs 3]`"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import httpx

from bench.debian import install_debian_packages
from bench.oix_server import running_oix
from conformance.corpus import StudySpec, synthetic_study
from dicomweb.multipart import encode_related, new_boundary, related_content_type

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STOW_BATCH = 20
HTTP_TIMEOUT_SECONDS = 120
LOAD_TIMEOUT_SECONDS = 120


def chromium() -> str:
    found = next((path for path in CHROMIUM_CANDIDATES if os.access(path, os.X_OK)), None)
    if found is None:
        install_debian_packages(["chromium"])
        found = next(path for path in CHROMIUM_CANDIDATES if os.access(path, os.X_OK))
    return found


def store(root: str, parts: list[bytes]) -> None:
    with httpx.Client(timeout=HTTP_TIMEOUT_SECONDS) as http:
        for start in range(0, len(parts), STOW_BATCH):
            boundary = new_boundary()
            body = b"".join(encode_related(parts[start:start + STOW_BATCH], "application/dicom", boundary))
            answer = http.post(f"{root}/studies", content=body,
                               headers={"Content-Type": related_content_type("application/dicom", boundary)})
            answer.raise_for_status()


def open_viewer(browser, url: str) -> dict[str, float]:
    """One cold open (a fresh browser context: no cache): milliseconds since navigation start."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    try:
        page = context.new_page()
        page.goto(url)
        # Polled from here: the page's Content-Security-Policy stops playwright's in-page polling.
        deadline = time.monotonic() + LOAD_TIMEOUT_SECONDS
        while not page.evaluate("performance.getEntriesByName('oix-all-images').length === 1"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the viewer did not load every image within {LOAD_TIMEOUT_SECONDS} s")
            time.sleep(0.01)
        marks = page.evaluate("""() => ({
            first: performance.getEntriesByName('oix-first-image')[0].startTime,
            all: performance.getEntriesByName('oix-all-images')[0].startTime,
            metadata: performance.getEntriesByType('resource').find(r => r.name.endsWith('/metadata')).duration })""")
        return {"first_image_ms": round(marks["first"], 1), "all_images_ms": round(marks["all"], 1),
                "metadata_ms": round(marks["metadata"], 1)}
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    spec = StudySpec(instances_per_series=args.images, rows=512, columns=512, study_description="CT viewer bench")
    parts = list(synthetic_study(spec))
    from playwright.sync_api import sync_playwright

    with running_oix() as server:
        started = time.monotonic()
        store(server.dicomweb_root, parts)
        stored_seconds = time.monotonic() - started
        base, org = server.dicomweb_root.rsplit("/dicomweb/", 1)
        url = f"{base}/viewer/{org}/studies/{spec.study_uid}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_ARGS)
            try:
                runs = [open_viewer(browser, url) for _ in range(args.runs)]
            finally:
                browser.close()
    print(json.dumps({
        "bench": "viewer", "images": args.images, "rows": spec.rows, "columns": spec.columns,
        "runs": len(runs), "stow_seconds": round(stored_seconds, 2),
        **{f"{name}_median": round(statistics.median(run[name] for run in runs), 1) for name in runs[0]},
        "each": runs,
    }))


if __name__ == "__main__":
    main()
