"""The one typed settings object: read once (flags over environment over defaults), passed down."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dicomweb.context import DicomWebLimits


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./oix-data")
    database_url: str | None = None  # None: SQLite in the data directory
    host: str = "127.0.0.1"
    port: int = 8080
    cors_origins: tuple[str, ...] = ()
    limits: DicomWebLimits = field(default_factory=DicomWebLimits)
    log_level: str = "info"
    # Processes that read received objects' headers on STOW (0: in the server process).
    parse_workers: int = field(default_factory=lambda: min(os.cpu_count() or 1, 4))

    @classmethod
    def from_environment(cls, **flags) -> Settings:
        """Flags given on the command line win over OIX_* environment variables."""
        env = os.environ
        values = {
            "data_dir": Path(env["OIX_DATA_DIR"]) if env.get("OIX_DATA_DIR") else cls.data_dir,
            "database_url": env.get("OIX_DATABASE_URL") or None,
            "cors_origins": tuple(o.strip() for o in env.get("OIX_CORS_ORIGINS", "").split(",") if o.strip()),
            "log_level": env.get("OIX_LOG_LEVEL", "info"),
        }
        if env.get("OIX_PARSE_WORKERS"):
            values["parse_workers"] = int(env["OIX_PARSE_WORKERS"])
        limits = DicomWebLimits(
            max_request_bytes=int(env.get("OIX_MAX_REQUEST_BYTES", DicomWebLimits.max_request_bytes)),
            max_object_bytes=int(env.get("OIX_MAX_OBJECT_BYTES", DicomWebLimits.max_object_bytes)),
            bulk_threshold=int(env.get("OIX_BULK_THRESHOLD", DicomWebLimits.bulk_threshold)),
        )
        values.update({name: value for name, value in flags.items() if value is not None})
        if "data_dir" in flags and flags["data_dir"] is not None:
            values["data_dir"] = Path(flags["data_dir"])
        return cls(limits=limits, **values)
