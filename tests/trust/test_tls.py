"""HTTPS end to end (issue Trust acceptance: "HTTPS works end to end with dicomweb-client against
a self-signed certificate made in the test"): a live `oix serve --tls-cert --tls-key` with
authentication on, a stock DICOMweb client that trusts only that certificate storing,
searching and retrieving a real DICOM file byte for byte; HSTS on every HTTPS answer (RFC
6797); no TLS below 1.2 (RFC 8996); no plain HTTP on the TLS port; no trust without the
certificate; a Secure session cookie (RFC 6265 4.1.2.5)."""

from __future__ import annotations

import datetime
import ipaddress
import re
import socket
import ssl
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from dicomweb_client import DICOMwebClient
from pydicom.data import get_testdata_file

from tests.multipart_body import split_related
from tests.servers import CLI_TIMEOUT_SECONDS, OixServer, new_org_slug, oix_command, run_cli, start_server, stop_server

ORG = new_org_slug("tls")
CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
HANDSHAKE_TIMEOUT_SECONDS = 10.0
# Failures of the client's own OpenSSL before anything is sent: it would not offer the version.
REFUSED_LOCALLY = {"NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE", "UNSUPPORTED_PROTOCOL"}


@dataclass(frozen=True)
class SelfSignedCertificate:
    cert: Path
    key: Path


def self_signed_certificate(directory: Path) -> SelfSignedCertificate:
    """An EC P-256 certificate for 127.0.0.1 (an IP subjectAltName: RFC 6125 does not match IP
    addresses against the common name), its own issuer, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OIX test 127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return SelfSignedCertificate(cert_path, key_path)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> SelfSignedCertificate:
    return self_signed_certificate(tmp_path_factory.mktemp("certificate"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, certificate) -> Iterator[OixServer]:
    running = start_server(tmp_path_factory.mktemp("tls") / "data", orgs=(ORG,), auth=True,
                           args=("--tls-cert", str(certificate.cert), "--tls-key", str(certificate.key)))
    try:
        yield running
    finally:
        stop_server(running)


def trusting(server: OixServer) -> ssl.SSLContext:
    """What httpx verifies the server with: the test certificate and nothing else."""
    return ssl.create_default_context(cafile=server.tls_ca)


def cli_env(server: OixServer) -> dict[str, str]:
    return {"OIX_DATA_DIR": str(server.data_dir), "PATH": "/usr/bin:/bin"}


@pytest.fixture(scope="module")
def sender_key(server) -> str:
    created = run_cli(["key", "create", "--org", ORG, "--role", "sender", "--expires", "1d"], cli_env(server))
    return created.stdout.strip()


@dataclass(frozen=True)
class Exchange:
    """One request and its response, as the client sent and received them."""

    method: str
    path: str
    request_headers: Mapping[str, str]  # case-insensitive, as requests gives them
    request_body: bytes
    status_code: int
    headers: Mapping[str, str]
    content: bytes


class Wire:
    """Every exchange the client made, recorded by a requests response hook. It keeps copies,
    not the responses: a response kept alive keeps its TLS connection open, and uvicorn waits
    for an open TLS connection when asked to stop."""

    def __init__(self):
        self.exchanges: list[Exchange] = []

    def __call__(self, response: requests.Response, *args, **kwargs) -> requests.Response:
        request = response.request
        body = request.body if isinstance(request.body, bytes) else (request.body or "").encode()
        self.exchanges.append(Exchange(request.method, request.path_url.split("?")[0], request.headers.copy(), body,
                                       response.status_code, response.headers.copy(), response.content))
        return response

    def last(self, method: str, path_suffix: str) -> Exchange:
        return next(e for e in reversed(self.exchanges) if e.method == method and e.path.endswith(path_suffix))


@contextmanager
def trusting_client(server: OixServer, key: str, wire: Wire | None = None) -> Iterator[DICOMwebClient]:
    """dicomweb-client whose session trusts the test certificate and nothing else. The session
    ignores the environment: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a
    session's own `verify`."""
    with requests.Session() as session:
        session.trust_env = False
        session.verify = server.tls_ca
        yield DICOMwebClient(server.root(ORG), session=session, headers={"Authorization": f"Bearer {key}"},
                             callback=wire, timeout=30)


def test_dicomweb_client_stores_searches_and_retrieves_byte_exact_over_https(server, sender_key):
    """PS3.18 10.5 STOW-RS, 10.6 QIDO-RS, 10.4 WADO-RS (transfer-syntax=*: as stored) over TLS."""
    original = CT_SMALL.read_bytes()
    dataset = pydicom.dcmread(CT_SMALL)
    study, series, sop = dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID
    wire = Wire()
    assert server.base_url.startswith("https://127.0.0.1:")
    with trusting_client(server, sender_key, wire) as client:
        receipt = client.store_instances([dataset])
        stored = [item.ReferencedSOPInstanceUID for item in receipt.ReferencedSOPSequence]
        assert stored == [sop] and "FailedSOPSequence" not in receipt
        request = wire.last("POST", "/studies")
        # dicomweb-client opens the body with CRLF (an RFC 2046 5.1.1 preamble); what follows is the file.
        [sent] = split_related(request.request_headers["Content-Type"], request.request_body.removeprefix(b"\r\n"))
        assert sent.content == original

        found = client.search_for_studies(search_filters={"StudyInstanceUID": study})
        assert [match["0020000D"]["Value"][0] for match in found] == [study]
        instances = client.search_for_instances(study, series)
        assert [match["00080018"]["Value"][0] for match in instances] == [sop]

        retrieved = client.retrieve_instance(study, series, sop, media_types=(("application/dicom", "*"),))
        assert retrieved.SOPInstanceUID == sop and retrieved.PixelData == dataset.PixelData
        answer = wire.last("GET", f"/instances/{sop}")
        [part] = split_related(answer.headers["Content-Type"], answer.content)
        assert part.content == original

        metadata = client.retrieve_instance_metadata(study, series, sop)
    assert metadata["00100020"]["Value"] == [dataset.PatientID]
    assert metadata["00080018"]["Value"] == [sop]
    # The URI is built from the request's Host header, which dicomweb-client sends without the port.
    assert metadata["7FE00010"]["BulkDataURI"].startswith("https://127.0.0.1")


def test_every_https_answer_carries_strict_transport_security(server, sender_key):
    """RFC 6797 6.1: max-age is required; a year, and subdomains too."""
    wire = Wire()
    with trusting_client(server, sender_key, wire) as client:
        client.search_for_studies()
    answers = [(e.path, e.status_code, e.headers) for e in wire.exchanges]
    with httpx.Client(base_url=server.base_url, verify=trusting(server), timeout=10) as http:
        for path in ("/healthz", "/login", "/api/me"):  # JSON, a page, a 401 refusal
            response = http.get(path)
            answers.append((path, response.status_code, response.headers))
    assert [status for _path, status, _headers in answers] == [200, 200, 200, 401]
    for path, _status, headers in answers:
        hsts = headers.get("Strict-Transport-Security", "")
        max_age = re.search(r"max-age=(\d+)", hsts)
        assert max_age and int(max_age.group(1)) >= 31536000, (path, hsts)
        assert "includeSubDomains" in hsts


def test_plain_http_server_sends_no_strict_transport_security(tmp_path):
    """RFC 6797 7.2: an HSTS host must not send the header over non-secure transport."""
    plain = start_server(tmp_path / "plain", auth=True)
    try:
        response = httpx.get(f"{plain.base_url}/healthz", timeout=10)
    finally:
        stop_server(plain)
    assert response.status_code == 200 and response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" not in response.headers


def handshake(server: OixServer, context: ssl.SSLContext) -> str:
    """The TLS version negotiated with the server (raises ssl.SSLError when none is)."""
    port = httpx.URL(server.base_url).port
    with socket.create_connection(("127.0.0.1", port), timeout=HANDSHAKE_TIMEOUT_SECONDS) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return tls.version()


def client_context(server: OixServer, highest: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that trusts the test certificate and offers TLS from 1.0 up to `highest`;
    security level 0 so that the local OpenSSL is willing to offer the old versions at all."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(server.tls_ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1 and TLSv1_1 are deprecated names
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = highest
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def test_a_client_speaking_only_tls_1_1_cannot_connect(server):
    """RFC 8996: TLS 1.0 and 1.1 must not be negotiated. The client here really offers 1.1
    (security level 0); should the local OpenSSL still refuse to offer it (a build without
    TLS 1.1), the handshake fails on the client's side, which the assertion also accepts,
    since either way no TLS 1.1 session exists; the TLS 1.2 control proves the same client
    connects once it may use 1.2."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tls_1_1 = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError) as refused:
        handshake(server, client_context(server, tls_1_1))
    if refused.value.reason in REFUSED_LOCALLY:
        warnings.warn(f"the local OpenSSL would not offer TLS 1.1 ({refused.value.reason}): the server's "
                      "refusal of it was not exercised", stacklevel=1)
    assert handshake(server, client_context(server, ssl.TLSVersion.TLSv1_2)) == "TLSv1.2"
    assert handshake(server, client_context(server, ssl.TLSVersion.TLSv1_3)) == "TLSv1.3"


def test_plain_http_to_the_tls_port_gets_no_answer(server):
    plain_url = server.base_url.replace("https://", "http://", 1)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain_url}/healthz", timeout=10)


def test_a_client_that_does_not_trust_the_certificate_refuses_the_server(server, sender_key):
    """A self-signed certificate is trusted only by clients given it: the default CA store fails
    verification, for httpx and for dicomweb-client's default requests session alike."""
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{server.base_url}/healthz", timeout=10)
    untrusting = DICOMwebClient(server.root(ORG), headers={"Authorization": f"Bearer {sender_key}"}, timeout=10)
    untrusting.set_http_retry_params(retry=False)
    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.search_for_studies()


def test_sign_in_over_https_sets_a_secure_session_cookie(server):
    """RFC 6265 4.1.2.5: under TLS the session cookie is Secure, so no browser sends it over
    plain HTTP; HttpOnly and SameSite=Lax as over HTTP."""
    username, password = f"tls-{ORG}", "a long enough passphrase"
    subprocess.run([*oix_command(), "user", "add", username, "--org", ORG, "--role", "viewer"],
                   env=cli_env(server), input=password + "\n", capture_output=True, text=True, check=True,
                   timeout=CLI_TIMEOUT_SECONDS)
    with httpx.Client(base_url=server.base_url, verify=trusting(server), timeout=30) as browser:
        form = browser.get("/login")
        assert "Secure" in form.headers["set-cookie"]  # the sign-in form's CSRF cookie too
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        signed_in = browser.post("/login", data={"username": username, "password": password, "csrf_token": csrf,
                                                 "next": "/api/me"})
        assert signed_in.status_code == 303, signed_in.text
        session_cookie = next(c for c in signed_in.headers.get_list("set-cookie") if c.startswith("oix_session="))
        attributes = {part.strip().split("=")[0].lower() for part in session_cookie.split(";")[1:]}
        assert {"secure", "httponly", "samesite"} <= attributes and "samesite=lax" in session_cookie.lower()
        me = browser.get("/api/me")
        assert me.status_code == 200 and me.json()["actor"] == username
