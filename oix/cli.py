"""`oix`: run the server and administer it. Every command reads OIX_DATA_DIR and
OIX_DATABASE_URL; flags win."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from exchange.errors import ExchangeError


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
    serve.add_argument("--parse-workers", type=int, default=None,
                       help="processes reading stored objects' headers (default: CPUs up to 4; 0: none)")

    org = commands.add_parser("org", help="organisations")
    org_commands = org.add_subparsers(dest="org_command", required=True)
    add = org_commands.add_parser("add", help="add an organisation")
    add.add_argument("slug", help="short code, e.g. an ODS code such as RJ1")
    add.add_argument("name", help="the organisation's name")
    _storage_flags(add)
    listing = org_commands.add_parser("list", help="list organisations")
    _storage_flags(listing)

    conformance = commands.add_parser("conformance", help="conformance statement and checks")
    conformance_commands = conformance.add_subparsers(dest="conformance_command", required=True)
    check = conformance_commands.add_parser("check", help="check a DICOMweb service root against PS3.18")
    check.add_argument("url", help="the service root, e.g. http://127.0.0.1:8080/dicomweb/RJ1")
    check.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    check.add_argument("--json", action="store_true", help="print the results as JSON")
    conformance_commands.add_parser("statement", help="print the conformance statement as JSON")

    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ExchangeError as exc:
        print(f"oix: {exc}", file=sys.stderr)
        return 1


def _storage_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None, help="where blobs and the SQLite index live (OIX_DATA_DIR)")
    parser.add_argument("--database", dest="database_url", default=None,
                        help="index database URL, e.g. postgresql://user@host/db (OIX_DATABASE_URL)")


def _settings(args: argparse.Namespace):
    from oix.settings import Settings

    flags = {name: getattr(args, name, None) for name in ("data_dir", "database_url", "host", "port", "log_level",
                                                      "parse_workers")}
    origins = getattr(args, "cors_origins", None)
    if origins:
        flags["cors_origins"] = tuple(origins)
    return Settings.from_environment(**flags)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from oix.app import create_app

    settings = _settings(args)
    if not ipaddress.ip_address(_resolve(settings.host)).is_loopback:
        print(f"oix: serving on {settings.host}: no authentication exists yet, so anything reachable there "
              "can read every study. Bind to 127.0.0.1 unless this is a closed demo network.", file=sys.stderr)
    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s")
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                access_log=False, loop="uvloop", http="httptools", timeout_keep_alive=30)
    return 0


def _resolve(host: str) -> str:
    if host in ("localhost", ""):
        return "127.0.0.1"
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        import socket

        return socket.gethostbyname(host)


def _org(args: argparse.Namespace) -> int:
    from oix.app import open_services

    services = open_services(_settings(args))
    try:
        if args.org_command == "add":
            organisation = services.directory.add(args.slug, args.name)
            print(f"added {organisation.slug}\t{organisation.name}")
        else:
            for organisation in services.directory.all():
                print(f"{organisation.slug}\t{organisation.name}")
    finally:
        services.database.dispose()
    return 0


def _conformance(args: argparse.Namespace) -> int:
    if args.conformance_command == "statement":
        import orjson

        from conformance.statement import conformance_statement

        print(orjson.dumps(conformance_statement(), option=orjson.OPT_INDENT_2).decode())
        return 0
    from conformance.kit import main as check_main

    return check_main(args.url, timeout=args.timeout, as_json=args.json)


COMMANDS = {"serve": _serve, "org": _org, "conformance": _conformance}

if __name__ == "__main__":
    sys.exit(main())
