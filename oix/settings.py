"""The one typed settings object: read once (flags over environment over defaults), passed down."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dicomweb.context import DicomWebLimits
from oix.oidc import OidcSettings

SEVEN_YEARS_DAYS = 7 * 365 + 2  # audit retention (NHS records guidance for audit trails)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./oix-data")
    database_url: str | None = None  # None: SQLite in the data directory
    host: str = "127.0.0.1"
    port: int = 8080
    cors_origins: tuple[str, ...] = ()
    limits: DicomWebLimits = field(default_factory=DicomWebLimits)
    log_level: str = "info"
    # Server processes sharing the port (`oix serve --workers`): one more than the cores, up to 4.
    workers: int = field(default_factory=lambda: default_workers())
    # Processes that read received objects' headers on STOW, for each worker (0: in the worker
    # itself). Default: the cores (up to 4) shared out among the workers, at least one each.
    parse_workers: int | None = None
    # Trust: without authentication a request without credentials acts as admin of every
    # organisation; allowed on loopback, or elsewhere only for a declared demo.
    auth_required: bool = True
    demo: bool = False
    oidc: OidcSettings | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    audit_enabled: bool = True  # off only for a demo (benchmarks measure its cost)
    audit_retention_days: int = SEVEN_YEARS_DAYS
    transfer_idle_seconds: float = 300.0  # an outbox stream quiet this long is delivered
    webhook_timeout_seconds: float = 10.0  # one delivery attempt; then it is retried with backoff
    retention_interval_seconds: float = 3600.0  # how often expired received copies go (0: never, cron instead)
    # Auto-forwarding to a PACS (exchange/forwarding.py): one STOW-RS request's time limit, the
    # instances per request, and the backoff between attempts (first wait, then x5 up to the cap).
    forward_timeout_seconds: float = 60.0
    forward_batch_instances: int = 8
    forward_backoff_seconds: float = 30.0
    forward_backoff_max_seconds: float = 3600.0
    # Encryption at rest, off unless a key is given: a key file (`oix keys generate`) and/or one
    # base64 key in the environment (storage/keyring.py).
    encryption_key_file: Path | None = None
    encryption_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.parse_workers is None:
            object.__setattr__(self, "parse_workers", max(1, _cores() // max(self.workers, 1)))

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
        if env.get("OIX_WORKERS"):
            values["workers"] = int(env["OIX_WORKERS"])
        values["auth_required"] = env.get("OIX_AUTH", "required").lower() != "off"
        values["demo"] = env.get("OIX_DEMO", "").lower() in ("1", "true", "yes")
        values["audit_enabled"] = env.get("OIX_AUDIT", "on").lower() != "off"
        if env.get("OIX_WEBHOOK_TIMEOUT"):
            values["webhook_timeout_seconds"] = float(env["OIX_WEBHOOK_TIMEOUT"])
        for name, variable, kind in (("forward_timeout_seconds", "OIX_FORWARD_TIMEOUT", float),
                                     ("forward_batch_instances", "OIX_FORWARD_BATCH", int),
                                     ("forward_backoff_seconds", "OIX_FORWARD_BACKOFF_SECONDS", float),
                                     ("forward_backoff_max_seconds", "OIX_FORWARD_BACKOFF_MAX_SECONDS", float)):
            if env.get(variable):
                values[name] = kind(env[variable])
        if env.get("OIX_TRANSFER_IDLE_SECONDS"):
            values["transfer_idle_seconds"] = float(env["OIX_TRANSFER_IDLE_SECONDS"])
        if env.get("OIX_RETENTION_INTERVAL_SECONDS"):
            values["retention_interval_seconds"] = float(env["OIX_RETENTION_INTERVAL_SECONDS"])
        if env.get("OIX_AUDIT_RETENTION_DAYS"):
            values["audit_retention_days"] = int(env["OIX_AUDIT_RETENTION_DAYS"])
        for name in ("tls_cert", "tls_key"):
            if env.get(f"OIX_{name.upper()}"):
                values[name] = Path(env[f"OIX_{name.upper()}"])
        values["oidc"] = OidcSettings.from_environment(env)
        if env.get("OIX_ENCRYPTION_KEY_FILE"):
            values["encryption_key_file"] = Path(env["OIX_ENCRYPTION_KEY_FILE"])
        values["encryption_key"] = env.get("OIX_ENCRYPTION_KEY") or None
        limits = DicomWebLimits(
            max_request_bytes=int(env.get("OIX_MAX_REQUEST_BYTES", DicomWebLimits.max_request_bytes)),
            max_object_bytes=int(env.get("OIX_MAX_OBJECT_BYTES", DicomWebLimits.max_object_bytes)),
            bulk_threshold=int(env.get("OIX_BULK_THRESHOLD", DicomWebLimits.bulk_threshold)),
        )
        values.update({name: value for name, value in flags.items() if value is not None})
        for name in ("data_dir", "tls_cert", "tls_key", "encryption_key_file"):
            if flags.get(name) is not None:
                values[name] = Path(flags[name])
        return cls(limits=limits, **values)


def _cores() -> int:
    return min(os.cpu_count() or 1, 4)


def default_workers() -> int:
    """One server process more than the cores, up to 4. Each worker's threads share one GIL, and
    a store waits in turn on the disk and on SQLite's single writer: with one worker per core,
    the two cores here were 80-84 % busy storing CT-size objects at 8 clients; a third worker
    stored 12 % more of them per second, at less processor time each (bench/README.md)."""
    return min(_cores() + 1, 4)
