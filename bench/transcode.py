"""`python -m bench.transcode`: WADO-RS retrieve of a series stored as lossless JPEG 2000, as
stored (transfer-syntax=*) and transcoded (by default to Explicit VR Little Endian), from a live
OIX on loopback, in one run (PS3.18 8.7.3.5.2). Prints one JSON line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import httpx

from bench.oix_server import running_oix
from bench.rendered import ct_instances, store
from bench.workload import new_client

log = logging.getLogger("bench")

# pydicom-data's 693_J2KR.dcm: a real 512×512 CT, 16 bits allocated, as lossless JPEG 2000.
SOURCE = "693_J2KR.dcm"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
RETRIEVE_SECONDS = 600.0
CHUNK = 1 << 20


def retrieve(url: str, transfer_syntax: str) -> dict:
    """GET the series once as multipart/related application/dicom in `transfer_syntax`, read as
    a stream and counted, not kept; bounded by RETRIEVE_SECONDS."""
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={transfer_syntax}'
    received, started = 0, time.perf_counter()
    with new_client() as client, client.stream("GET", url, headers={"Accept": accept},
                                               timeout=httpx.Timeout(RETRIEVE_SECONDS)) as response:
        status = response.status_code
        for chunk in response.iter_bytes(CHUNK):
            received += len(chunk)
            if time.perf_counter() - started > RETRIEVE_SECONDS:
                status = 0  # cut by time
                break
    seconds = time.perf_counter() - started
    return {"transfer_syntax": transfer_syntax, "status": status, "seconds": round(seconds, 2),
            "megabytes": round(received / 1e6, 1), "mb_per_second": round(received / 1e6 / seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transcode", description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200,
                        help="copies of the CT in the series, each with new UIDs (default 200)")
    parser.add_argument("--syntax", default=EXPLICIT_VR_LITTLE_ENDIAN,
                        help=f"the transfer syntax to transcode to (default {EXPLICIT_VR_LITTLE_ENDIAN})")
    parser.add_argument("--root", help="an OIX service root someone else started, instead of a new server")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    study, series, instances = ct_instances(SOURCE, arguments.instances)
    stored_megabytes = sum(len(data) for _, data in instances) / 1e6

    def measure(root: str) -> list[dict]:
        store(root, instances)
        log.info("stored %d instances of %s (%.1f MB)", len(instances), SOURCE, stored_megabytes)
        url = f"{root}/studies/{study}/series/{series}"
        return [retrieve(url, "*"), retrieve(url, arguments.syntax)]

    if arguments.root:
        as_stored, transcoded = measure(arguments.root)
    else:
        with running_oix() as server:
            as_stored, transcoded = measure(server.dicomweb_root)
    seconds = {"as_stored": as_stored["seconds"], "transcoded": transcoded["seconds"]}
    print(json.dumps({
        "bench": "transcode", "series": f"{arguments.instances} x {SOURCE} (512x512 CT, 16-bit, JPEG 2000 lossless)",
        "stored_megabytes": round(stored_megabytes, 1), "as_stored": as_stored, "transcoded": transcoded,
        "instances_per_second": {name: round(arguments.instances / value, 1) for name, value in seconds.items()},
        "transcoded_time_over_as_stored": round(seconds["transcoded"] / seconds["as_stored"], 1),
    }))
    return 0 if as_stored["status"] == transcoded["status"] == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
