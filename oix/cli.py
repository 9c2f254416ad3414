"""`oix`: run the server and administer it. Every command reads OIX_DATA_DIR and
OIX_DATABASE_URL; flags win."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from contextlib import contextmanager

from exchange.access import Role
from exchange.errors import ExchangeError
from storage.keyring import EncryptionError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oix", description="OIX, the Open Image Exchange")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the DICOMweb server")
    _storage_flags(serve)
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port to listen on (default 8080)")
    serve.add_argument("--cors-origin", action="append", dest="cors_origins",
                       help="an origin allowed to call the API from a browser (repeatable, or OIX_CORS_ORIGINS)")
    serve.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    serve.add_argument("--workers", type=int, default=None,
                       help="server processes sharing the port (default: one more than the cores, up to 4; OIX_WORKERS)")
    serve.add_argument("--parse-workers", type=int, default=None,
                       help="processes reading stored objects' headers, per worker (default: the cores, up to 4, "
                            "shared out among the workers; 0: none)")
    serve.add_argument("--tls-cert", default=None, help="PEM certificate (chain): serve HTTPS (OIX_TLS_CERT)")
    serve.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert (OIX_TLS_KEY)")
    serve.add_argument("--no-auth", dest="auth_required", action="store_const", const=False, default=None,
                       help="no authentication: every request acts as admin of every organisation "
                            "(loopback only, unless --demo; OIX_AUTH=off)")
    serve.add_argument("--demo", action="store_const", const=True, default=None,
                       help="declare a demo holding no real patient data: allows --no-auth on a "
                            "non-loopback address and OIX_AUDIT=off (OIX_DEMO=1)")

    org = commands.add_parser("org", help="organisations")
    org_commands = org.add_subparsers(dest="org_command", required=True)
    add = org_commands.add_parser("add", help="add an organisation")
    add.add_argument("slug", help="short code, e.g. an ODS code such as RJ1")
    add.add_argument("name", help="the organisation's name")
    _storage_flags(add)
    _organisation_flags(add)
    change = org_commands.add_parser("set", help="change an organisation's details")
    change.add_argument("slug")
    change.add_argument("--name", default=None)
    _organisation_flags(change)
    _storage_flags(change)
    listing = org_commands.add_parser("list", help="list organisations")
    _storage_flags(listing)

    user = commands.add_parser("user", help="local accounts (when no identity provider signs people in)")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    user_add = user_commands.add_parser("add", help="add an account; the password is read from standard input")
    user_add.add_argument("username")
    user_add.add_argument("--name", default="", help="the person's name as the portal shows it")
    user_add.add_argument("--org", help="an organisation to make the account a member of")
    user_add.add_argument("--role", choices=[role.value for role in Role], default="viewer")
    _storage_flags(user_add)
    grant = user_commands.add_parser("grant", help="give an account a role in an organisation")
    grant.add_argument("username")
    grant.add_argument("--org", required=True)
    grant.add_argument("--role", choices=[role.value for role in Role], required=True)
    _storage_flags(grant)
    password = user_commands.add_parser("password", help="set an account's password from standard input")
    password.add_argument("username")
    _storage_flags(password)

    key = commands.add_parser("key", help="API keys for machines (a PACS, an upload script)")
    key_commands = key.add_subparsers(dest="key_command", required=True)
    key_create = key_commands.add_parser("create", help="create a key; it is printed once and never again")
    key_create.add_argument("--org", required=True)
    key_create.add_argument("--role", choices=[role.value for role in Role], required=True)
    key_create.add_argument("--expires", default="90d", help="lifetime: 90d, 12h, 4w, 1y or never (default 90d)")
    key_create.add_argument("--name", default="", help="what the key is for, e.g. 'PACS upload'")
    _storage_flags(key_create)
    key_list = key_commands.add_parser("list", help="list an organisation's keys")
    key_list.add_argument("--org", required=True)
    _storage_flags(key_list)
    key_revoke = key_commands.add_parser("revoke", help="revoke a key at once")
    key_revoke.add_argument("key_id")
    key_revoke.add_argument("--org", required=True)
    _storage_flags(key_revoke)

    audit = commands.add_parser("audit", help="the audit trail")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser("verify", help="check the hash chain: no event edited, none deleted")
    _storage_flags(verify)
    purge = audit_commands.add_parser("purge", help="delete events older than the retention period "
                                                    "(OIX_AUDIT_RETENTION_DAYS, default seven years)")
    purge.add_argument("--dry-run", action="store_true", help="count the events that would go; delete nothing")
    _storage_flags(purge)

    keys = commands.add_parser("keys", help="encryption at rest: its keys and their rotation")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_commands.add_parser("generate", help="append a new random key to a key file (created with "
                                                         "mode 0600); it becomes the active key")
    generate.add_argument("--file", required=True, help="the key file, e.g. /etc/oix/keys")
    rotate = keys_commands.add_parser("rotate", help="re-encrypt every blob not under the active key, plaintext "
                                                     "ones too (a running server keeps serving)")
    rotate.add_argument("--index", action="store_true",
                        help="also re-encrypt the SQLite index under the active key (stop every server first)")
    _storage_flags(rotate)

    retention = commands.add_parser("retention", help="received copies past their destination's retention period")
    retention_commands = retention.add_subparsers(dest="retention_command", required=True)
    expire = retention_commands.add_parser("run", help="remove the expired received copies now (a server does it "
                                                       "every OIX_RETENTION_INTERVAL_SECONDS, default hourly)")
    expire.add_argument("--dry-run", action="store_true", help="report what would go; change nothing")
    expire.add_argument("--now", type=_moment, default=None,
                        help="expire as of this time, ISO 8601 (UTC unless it says): what would go on a later day")
    expire.add_argument("--json", action="store_true", help="print the report as JSON")
    _storage_flags(expire)

    usage = commands.add_parser("usage", help="transfers, studies, instances and bytes each organisation sent and "
                                              "received, per calendar month (UTC); counts, never prices")
    usage.add_argument("--org", default=None, help="one organisation (default: every one)")
    usage.add_argument("--month", type=_month, default=None, help="YYYY-MM (default: this month)")
    usage.add_argument("--from", dest="first", type=_month, default=None, help="the first of several months, YYYY-MM")
    usage.add_argument("--to", dest="last", type=_month, default=None,
                       help="the last month, YYYY-MM (default with --from: this month)")
    usage.add_argument("--json", action="store_true", help="print the months as JSON")
    _storage_flags(usage)

    conformance = commands.add_parser("conformance", help="conformance statement and checks")
    conformance_commands = conformance.add_subparsers(dest="conformance_command", required=True)
    check = conformance_commands.add_parser("check", help="check a DICOMweb service root against PS3.18")
    check.add_argument("url", help="the service root, e.g. http://127.0.0.1:8080/dicomweb/RJ1")
    check.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    check.add_argument("--json", action="store_true", help="print the results as JSON")
    check.add_argument("--token", default=os.environ.get("OIX_TOKEN"),
                       help="bearer token or OIX API key to send (default: OIX_TOKEN); the checks store, "
                            "retrieve and delete a study of their own, so it needs the admin role")
    conformance_commands.add_parser("statement", help="print the conformance statement as JSON")

    send = commands.add_parser("send", help="send folders of DICOM files to another organisation (STOW-RS); a "
                                            "run cut short resumes without sending again what was acknowledged")
    send.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files, and folders walked recursively")
    send.add_argument("--to", required=True, metavar="DEST", help="the destination organisation's code")
    send.add_argument("--server", default=os.environ.get("OIX_SERVER"),
                      help="the OIX server, e.g. https://oix.example.nhs.uk (default: OIX_SERVER)")
    send.add_argument("--org", default=os.environ.get("OIX_ORG"),
                      help="the sending organisation (default: OIX_ORG, or the one the token acts for)")
    send.add_argument("--token", default=os.environ.get("OIX_TOKEN"),
                      help="API key or bearer token, of the sender or admin role (default: OIX_TOKEN)")
    send.add_argument("--urgency", choices=["routine", "urgent", "emergency"], default="routine")
    send.add_argument("--note", default="", help="a note for the receiver (one line)")
    send.add_argument("--report", metavar="FILE", help="a PDF, or a .txt file, sent as a report in the study of "
                                                       "the first DICOM file (in name order)")
    send.add_argument("--author", help="the report's author (default: your user name)")
    send.add_argument("--batch", type=int, help="objects per STOW request (default 20)")
    send.add_argument("--batch-mb", type=int, help="MiB per STOW request (default 64)")
    send.add_argument("--retries", type=int,
                      help="tries again after a connection failure or a 5xx, waiting 1, 2, 4… s (default 5)")
    send.add_argument("--state", metavar="FILE",
                      help="the journal of acknowledged instances (default: ./.oix-send-DEST.jsonl)")
    send.add_argument("--no-complete", action="store_true",
                      help="leave the transfers receiving (more to come) rather than deliver them at the end")

    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ExchangeError, EncryptionError) as exc:
        print(f"oix: {exc}", file=sys.stderr)
        return 1


def _organisation_flags(parser: argparse.ArgumentParser) -> None:
    from exchange.organisations import KINDS

    parser.add_argument("--kind", choices=KINDS, default=None, help="default trust")
    parser.add_argument("--contact", default=None, help="who to call about transfers (phone, email)")
    parser.add_argument("--retention-days", type=int, default=None,
                        help="days received copies are kept unless retained (default 30)")
    parser.add_argument("--identity-domain", default=None,
                        help="Issuer of Patient ID (0010,0021) of the organisation's own patient IDs")


def _storage_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None, help="where blobs and the SQLite index live (OIX_DATA_DIR)")
    parser.add_argument("--database", dest="database_url", default=None,
                        help="index database URL, e.g. postgresql://user@host/db (OIX_DATABASE_URL)")
    parser.add_argument("--encryption-key-file", default=None,
                        help="encrypt blobs and the SQLite index at rest with these keys (OIX_ENCRYPTION_KEY_FILE)")


def _settings(args: argparse.Namespace):
    from oix.settings import Settings

    flags = {name: getattr(args, name, None) for name in ("data_dir", "database_url", "host", "port", "log_level",
                                                      "workers", "parse_workers", "tls_cert", "tls_key", "auth_required",
                                                      "demo", "encryption_key_file")}
    origins = getattr(args, "cors_origins", None)
    if origins:
        flags["cors_origins"] = tuple(origins)
    return Settings.from_environment(**flags)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from oix.workers import serve_workers, server_app

    settings = _settings(args)
    refusal = _refusal(settings)
    if refusal:
        print(f"oix: {refusal}", file=sys.stderr)
        return 2
    tls = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)} if settings.tls_cert else {}
    # uvicorn's TLS context is Python's PROTOCOL_TLS_SERVER: TLS 1.2 at least (Python >= 3.10).
    options = dict(host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False,
                   loop="uvloop", http="httptools", timeout_keep_alive=30,
                   timeout_graceful_shutdown=10, **tls)  # a TLS peer that never closes must not hold a stop
    if settings.workers > 1:
        serve_workers(settings, options)
    else:
        uvicorn.run(server_app(settings), **options)
    return 0


def _refusal(settings) -> str | None:
    """Why the server must not start as configured, or None."""
    if bool(settings.tls_cert) != bool(settings.tls_key):
        return "--tls-cert and --tls-key go together"
    if settings.workers < 1:
        return f"--workers (OIX_WORKERS) takes 1 or more server processes, not {settings.workers}"
    if not settings.auth_required and not settings.demo \
            and not ipaddress.ip_address(_resolve(settings.host)).is_loopback:
        return (f"refusing to serve on {settings.host} without authentication: anything reachable there could "
                "read every study. Configure authentication (leave out --no-auth / OIX_AUTH=off), bind to "
                "127.0.0.1, or pass --demo for a demo holding no patient data.")
    if not settings.audit_enabled and not settings.demo:
        return "OIX_AUDIT=off is only for a declared demo (--demo): every access to patient data is audited"
    return None


def _resolve(host: str) -> str:
    if host in ("localhost", ""):
        return "127.0.0.1"
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        import socket

        return socket.gethostbyname(host)


@contextmanager
def _services(args: argparse.Namespace):
    """The services on the configured storage, closed (audit events written) afterwards."""
    from oix.app import open_services

    services = open_services(_settings(args))
    try:
        yield services
    finally:
        services.close()


def _cli_requester():
    """Changes made at the command line are audited as the operating-system user who made them."""
    import getpass

    from exchange.access import ActorKind, Principal, Requester

    return Requester(Principal(f"cli:{getpass.getuser()}", ActorKind.SYSTEM, every_organisation=Role.ADMIN),
                     client_address="localhost", user_agent="oix-cli")


def _org(args: argparse.Namespace) -> int:
    with _services(args) as services:
        details = {name: getattr(args, name, None) for name in ("kind", "contact", "retention_days",
                                                                "identity_domain")}
        if args.org_command == "add":
            organisation = services.admin.add_organisation(_cli_requester(), args.slug, args.name, **details)
            print(f"added {organisation.slug}\t{organisation.name}")
        elif args.org_command == "set":
            organisation = services.admin.update_organisation(_cli_requester(), args.slug,
                                                                {"name": args.name, **details})
            print(f"{organisation.slug}\t{organisation.name}\t{organisation.kind}\t"
                  f"retention {organisation.retention_days} days\t{organisation.identity_domain}")
        else:
            for organisation in services.directory.all():
                print(f"{organisation.slug}\t{organisation.name}")
    return 0


def _read_password(prompt: str) -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\n")


def _user(args: argparse.Namespace) -> int:
    with _services(args) as services:
        requester = _cli_requester()
        if args.user_command == "add":
            services.admin.add_account(requester, args.username, _read_password("password: "), args.name)
            print(f"added account {args.username}")
            if args.org:
                services.admin.grant(requester, args.username, args.org, Role(args.role))
                print(f"{args.username} is {args.role} in {args.org}")
        elif args.user_command == "grant":
            services.admin.grant(requester, args.username, args.org, Role(args.role))
            print(f"{args.username} is {args.role} in {args.org}")
        else:
            services.admin.set_password(requester, args.username, _read_password("new password: "))
            print(f"password of {args.username} changed")
    return 0


def _key(args: argparse.Namespace) -> int:
    from exchange.api_keys import parse_lifetime

    with _services(args) as services:
        if args.key_command == "create":
            issued = services.admin.create_key(_cli_requester(), args.org, Role(args.role), args.name,
                                               parse_lifetime(args.expires))
            expiry = f"{issued.key.expires_at:%Y-%m-%d %H:%M} UTC" if issued.key.expires_at else "never"
            print(f"key {issued.key.key_id} for {args.org} as {args.role}, expires {expiry}.", file=sys.stderr)
            print("This is the only time the key is shown; keep it in the client's secret store:", file=sys.stderr)
            print(issued.secret)
        elif args.key_command == "list":
            for key in services.admin.keys_of(args.org):
                state = "revoked" if key.revoked_at else "active"
                used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never used"
                expires = f"{key.expires_at:%Y-%m-%d}" if key.expires_at else "no expiry"
                print(f"{key.key_id}\t{key.role}\t{state}\t{expires}\t{used}\t{key.name}")
        else:
            services.admin.revoke_key(_cli_requester(), args.org, args.key_id)
            print(f"revoked {args.key_id}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from storage.database import database_url, sqlite_file

    settings = _settings(args)
    index = sqlite_file(database_url(settings.database_url, settings.data_dir))
    if index is not None and not index.exists():
        print(f"oix: no index at {index}: is --data-dir (OIX_DATA_DIR) right?", file=sys.stderr)
        return 1
    with _services(args) as services:
        trail = services.audit
        if args.audit_command == "verify":
            report = trail.verify()
            if report.ok:
                print(f"ok: {report.checked} events, head {report.head_hash}")
                return 0
            for problem in report.problems:
                print(problem)
            print(f"oix: the audit trail fails verification: {len(report.problems)} problem(s) in "
                  f"{report.checked} events", file=sys.stderr)
            return 1
        now = trail.clock()
        purged = trail.purge(now, dry_run=args.dry_run)
        print(f"{'would purge' if args.dry_run else 'purged'} {purged} events older than {trail.retention.days} "
              f"days (before {now - trail.retention:%Y-%m-%d %H:%M} UTC)")
        return 0


def _keys(args: argparse.Namespace) -> int:
    from pathlib import Path

    from storage.keyring import append_new_key

    if args.keys_command == "generate":
        key_id = append_new_key(Path(args.file))
        print(f"added key {key_id} to {args.file}; it is now the active key. Running servers read it when they "
              "meet it; restart them to encrypt new uploads under it, then run `oix keys rotate`.")
        return 0
    return _rotate(args)


def _rotate(args: argparse.Namespace) -> int:
    from storage.blobs import FileBlobStore
    from storage.database import database_url, sqlite_file
    from storage.key_rotation import PLAINTEXT, rotate
    from storage.keyring import Keyring, KeyringError

    settings = _settings(args)
    keyring = Keyring.load(settings.encryption_key_file, settings.encryption_key)
    if keyring is None:
        raise KeyringError("no encryption key is configured: give --encryption-key-file (OIX_ENCRYPTION_KEY_FILE) "
                           "or OIX_ENCRYPTION_KEY")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    index = sqlite_file(database_url(settings.database_url, settings.data_dir)) if args.index else None
    report = rotate(FileBlobStore(settings.data_dir, keyring), keyring, index)
    former = ", ".join(f"{count} from {key_id}" for key_id, count in sorted(report.rotated.items())) or "none"
    print(f"blobs re-encrypted under {report.active_id}: {sum(report.rotated.values())} ({former}); "
          f"already under it: {report.current}; failed: {len(report.failed)}")
    if report.index_from:
        print(f"index re-encrypted under {report.active_id} (from {report.index_from})")
    for key, reason in sorted(report.failed.items()):
        print(f"oix: blob {key} left as it was: {reason}", file=sys.stderr)
    if report.left_under:
        still = ", ".join(sorted(report.left_under - {PLAINTEXT}))
        print(f"oix: keep the keys {still or '(none)'} in the key file until a rotation leaves no blob under them",
              file=sys.stderr)
    return 1 if report.failed else 0


def _conformance(args: argparse.Namespace) -> int:
    if args.conformance_command == "statement":
        import orjson

        from conformance.statement import conformance_statement

        print(orjson.dumps(conformance_statement(), option=orjson.OPT_INDENT_2).decode())
        return 0
    from conformance.kit import main as check_main

    return check_main(args.url, timeout=args.timeout, as_json=args.json, token=args.token)


def _moment(text: str):
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"an ISO 8601 time such as 2026-12-31T09:00Z, not '{text}'") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _month(text: str):
    from exchange.usage import Month

    try:
        return Month.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _retention(args: argparse.Namespace) -> int:
    import orjson

    with _services(args) as services:
        report = services.retention.run(args.now, dry_run=args.dry_run, requester=_cli_requester())
    totals = {"transfers": report.transfers, "studies": report.studies, "instances": report.instances,
              "bytes": report.bytes, "blobs": report.blobs}
    if args.json:
        print(orjson.dumps({"now": report.now.isoformat(), "dry_run": report.dry_run, **totals, "expired": [
            {"transfer": item.transfer.id, "sender": item.transfer.sender, "destination": item.transfer.destination,
             "retention_days": item.retention_days, "studies": list(item.studies), "kept": list(item.kept),
             "instances": item.instances, "bytes": item.bytes, "blobs": len(item.blobs)} for item in report.expired]},
            option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"{'would expire' if report.dry_run else 'expired'} {report.transfers} transfer(s) as of "
          f"{report.now:%Y-%m-%d %H:%M} UTC: {report.studies} study(ies), {report.instances} instance(s), "
          f"{report.bytes} bytes; {report.blobs} blob file(s) {'to delete' if report.dry_run else 'deleted'}")
    for item in report.expired:
        kept = f"\t{len(item.kept)} kept, held otherwise" if item.kept else ""
        print(f"{item.transfer.id}\tto {item.transfer.destination} from {item.transfer.sender}\t"
              f"{len(item.studies)} study(ies)\t{item.instances} instance(s)\t{item.bytes} bytes\t"
              f"{len(item.blobs)} blob(s){kept}")
    return 0


def _usage(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    import orjson

    from exchange.usage import Month

    this_month = Month.of(datetime.now(timezone.utc))
    if args.month and (args.first or args.last):
        print("oix: give --month, or --from and --to, not both", file=sys.stderr)
        return 2
    first = args.month or args.first or args.last or this_month
    last = args.month or args.last or (this_month if args.first else first)
    with _services(args) as services:
        slugs = [args.org] if args.org else [organisation.slug for organisation in services.directory.all()]
        months = [usage for slug in slugs for usage in services.usage.months(slug, first, last)]
    if args.json:
        print(orjson.dumps([{"org": usage.org, "month": str(usage.month), "sent": vars(usage.sent),
                             "received": vars(usage.received)} for usage in months], option=orjson.OPT_INDENT_2).decode())
        return 0
    header = ["month", "organisation", "transfers sent", "studies sent", "instances sent", "bytes sent",
              "transfers received", "studies received", "instances received", "bytes received"]
    rows = [[str(usage.month), usage.org, *(str(value) for volume in (usage.sent, usage.received)
                                            for value in (volume.transfers, volume.studies, volume.instances,
                                                          volume.bytes))] for usage in months]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(value.ljust(width) if column < 2 else value.rjust(width)
                        for column, (value, width) in enumerate(zip(row, widths))).rstrip())
    return 0


def _send(args: argparse.Namespace) -> int:
    from oix.send import command

    return command(args)


COMMANDS = {"serve": _serve, "org": _org, "user": _user, "key": _key, "conformance": _conformance, "audit": _audit,
            "keys": _keys, "send": _send, "retention": _retention, "usage": _usage}

if __name__ == "__main__":
    sys.exit(main())
