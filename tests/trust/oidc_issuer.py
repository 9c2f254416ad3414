"""A real OpenID Provider for the tests, living in the test process: its own RSA and EC keys,
an HTTP server on a free 127.0.0.1 port (discovery, JWKS, authorize, token), and helpers to
mint tokens good and bad. A server subprocess can use it too: it is plain HTTP on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.loopback_http import LoopbackHttpServer

REQUEST_SOCKET_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class SigningKey:
    """A private key, its kid and the algorithm it signs with."""

    kid: str
    algorithm: str
    private_key: Any
    publish_alg: bool = True  # some providers leave "alg" out of their JWKS

    @classmethod
    def rsa(cls, kid: str, algorithm: str = "RS256") -> SigningKey:
        return cls(kid, algorithm, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str, *, publish_alg: bool = False) -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()), publish_alg)

    def public_jwk(self) -> dict[str, Any]:
        codec = ECAlgorithm if isinstance(self.private_key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
        jwk = codec.to_jwk(self.private_key.public_key(), as_dict=True)
        jwk.update(kid=self.kid, use="sig")
        if self.publish_alg:
            jwk["alg"] = self.algorithm
        return jwk

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, claims: Mapping[str, Any], *, kid: str | None = None,
             headers: Mapping[str, Any] | None = None) -> str:
        return jwt.encode(dict(claims), self.private_key, algorithm=self.algorithm,
                          headers={"kid": kid or self.kid, **(headers or {})})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge_hs256(claims: Mapping[str, Any], secret: bytes, kid: str) -> str:
    """An attacker's token: HS256 keyed with `secret` (e.g. the provider's public key PEM).
    Built by hand because PyJWT, rightly, refuses to use a PEM public key as an HMAC secret."""
    signing_input = (b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()) + "."
                     + b64url(json.dumps(dict(claims)).encode()))
    signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


@dataclass
class Authorization:
    """What /authorize was asked, kept under the code it issued (OAuth 2.0 RFC 6749 4.1)."""

    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    user: dict[str, Any]
    used: bool = False


@dataclass
class LocalOidcIssuer:
    """The provider. `url` is its issuer identifier; tokens go to `audience` (bearer) or
    `client_id` (ID tokens). Tests read `jwks_requests` and `authorizations`, and may set
    `jwks_status` (e.g. 503) and `jwks_cache_control` (e.g. "max-age=60")."""

    audience: str = "oix"
    client_id: str = "oix-portal"
    client_secret: str | None = "portal-secret"
    user: dict[str, Any] = field(default_factory=lambda: {
        "sub": "user-1001", "name": "Dr Ada Lovelace", "oix_orgs": {"RJ1": "admin", "RGT": "viewer"}})
    jwks_status: int = 200
    jwks_cache_control: str | None = None
    jwks_requests: int = 0
    discovery_requests: int = 0
    token_requests: int = 0
    authorizations: dict[str, Authorization] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.signing_key = SigningKey.rsa(f"rsa-{secrets.token_hex(4)}")
        self.ec_key = SigningKey.ec(f"ec-{secrets.token_hex(4)}")
        self.stranger_key = SigningKey.rsa(f"stranger-{secrets.token_hex(4)}")  # never published
        self._published: list[SigningKey] = [self.signing_key, self.ec_key]
        self._lock = threading.Lock()
        self._http = LoopbackHttpServer(_handler_for(self), "local-oidc-issuer")

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LocalOidcIssuer:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> LocalOidcIssuer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- where it is -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._http.url

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks"

    def environment(self, *, with_client: bool = True) -> dict[str, str]:
        """The OIX_OIDC_* variables that point an `oix serve` at this issuer."""
        env = {"OIX_OIDC_ISSUER": self.url, "OIX_OIDC_AUDIENCE": self.audience, "OIX_OIDC_JWKS_URL": self.jwks_url}
        if with_client:
            env["OIX_OIDC_CLIENT_ID"] = self.client_id
            if self.client_secret is not None:
                env["OIX_OIDC_CLIENT_SECRET"] = self.client_secret
        return env

    # -- keys and tokens ---------------------------------------------------------------------

    @property
    def published_keys(self) -> tuple[SigningKey, ...]:
        with self._lock:
            return tuple(self._published)

    def rotate_key(self, *, keep_previous: bool = True) -> SigningKey:
        """A new RSA signing key with a new kid, published and used from now on; the previous
        one stays published (as providers overlap keys) unless keep_previous is False."""
        new_key = SigningKey.rsa(f"rsa-{secrets.token_hex(4)}")
        with self._lock:
            if not keep_previous:
                self._published.remove(self.signing_key)
            self._published.append(new_key)
            self.signing_key = new_key
        return new_key

    def retire_key(self, key: SigningKey) -> None:
        """Stop publishing `key`: its tokens name a kid the JWKS no longer holds."""
        with self._lock:
            self._published.remove(key)

    def claims(self, overrides: Mapping[str, Any] | None = None, *, expires_in: float = 300,
               audience: str | list[str] | None = None, issuer: str | None = None) -> dict[str, Any]:
        """The test user's claims, with `overrides` applied (a None value removes a claim)."""
        now = int(time.time())
        claims: dict[str, Any] = {"iss": issuer or self.url, "aud": audience or self.audience,
                                  "iat": now, "exp": now + int(expires_in), **self.user}
        for name, value in (overrides or {}).items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def mint(self, overrides: Mapping[str, Any] | None = None, *, key: SigningKey | None = None,
             kid: str | None = None, expires_in: float = 300, audience: str | list[str] | None = None,
             issuer: str | None = None) -> str:
        """A token for the test user signed with `key` (the current signing key by default),
        naming `kid` (the key's own by default)."""
        claims = self.claims(overrides, expires_in=expires_in, audience=audience, issuer=issuer)
        return (key or self.signing_key).sign(claims, kid=kid)

    # -- the endpoints -----------------------------------------------------------------------

    def discovery_document(self) -> dict[str, Any]:
        # OpenID Connect Discovery 1.0, 3.
        return {
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "jwks_uri": self.jwks_url,
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        }

    def authorize(self, query: Mapping[str, str]) -> tuple[int, dict[str, str]]:
        """GET /authorize: sign the test user in at once and redirect back with a code."""
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != self.client_id or not redirect_uri.startswith("http"):
            return 400, {}
        separator = "&" if "?" in redirect_uri else "?"
        if query.get("response_type") != "code" or "openid" not in query.get("scope", "").split():
            error = {"error": "invalid_request", "state": query.get("state", "")}
            return 302, {"Location": redirect_uri + separator + urlencode(error)}
        code = secrets.token_urlsafe(24)
        with self._lock:
            self.authorizations[code] = Authorization(
                client_id=query["client_id"], redirect_uri=redirect_uri, scope=query.get("scope", ""),
                nonce=query.get("nonce"), code_challenge=query.get("code_challenge"),
                code_challenge_method=query.get("code_challenge_method"), user=dict(self.user))
        answer = {"code": code, **({"state": query["state"]} if "state" in query else {})}
        return 302, {"Location": redirect_uri + separator + urlencode(answer)}

    def token(self, form: Mapping[str, str], authorization_header: str | None) -> tuple[int, dict[str, Any]]:
        """POST /token: the authorization code grant (RFC 6749 4.1.3) with PKCE (RFC 7636 4.6)."""
        with self._lock:
            self.token_requests += 1
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization_header and authorization_header.startswith("Basic "):
            decoded = base64.b64decode(authorization_header[6:]).decode()
            client_id, _, client_secret = (unquote_plus(part) for part in decoded.partition(":"))
        if client_id != self.client_id or (self.client_secret is not None and client_secret != self.client_secret):
            return 401, {"error": "invalid_client", "error_description": "client authentication failed"}
        if form.get("grant_type") != "authorization_code":
            return 400, {"error": "unsupported_grant_type"}
        with self._lock:
            grant = self.authorizations.get(form.get("code", ""))
            if grant is None or grant.used:
                return 400, {"error": "invalid_grant", "error_description": "unknown or used code"}
            grant.used = True  # RFC 6749 4.1.2: a code is good once
        if grant.client_id != client_id or grant.redirect_uri != form.get("redirect_uri"):
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri does not match"}
        verifier = form.get("code_verifier", "")
        expected = b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
        if grant.code_challenge_method != "S256" or not hmac.compare_digest(expected, grant.code_challenge or ""):
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        overrides = {**grant.user, **({"nonce": grant.nonce} if grant.nonce else {})}
        id_token = self.mint(overrides, audience=self.client_id)
        access_token = self.mint(grant.user)
        return 200, {"access_token": access_token, "id_token": id_token, "token_type": "Bearer", "expires_in": 300}

    def jwks(self) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.jwks_requests += 1
            if self.jwks_status != 200:
                return self.jwks_status, {"error": "unavailable"}
            return 200, {"keys": [key.public_jwk() for key in self._published]}


def _handler_for(issuer: LocalOidcIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_SOCKET_TIMEOUT_SECONDS

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {name: values[0] for name, values in parse_qs(url.query).items()}
            if url.path == "/.well-known/openid-configuration":
                with issuer._lock:
                    issuer.discovery_requests += 1
                self._json(200, issuer.discovery_document())
            elif url.path == "/jwks":
                status, document = issuer.jwks()
                cache_control = issuer.jwks_cache_control if status == 200 else None
                self._json(status, document, {"Cache-Control": cache_control} if cache_control else {})
            elif url.path == "/authorize":
                status, headers = issuer.authorize(query)
                self._send(status, b"", "text/plain", headers)
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self) -> None:
            if urlsplit(self.path).path != "/token":
                self._json(404, {"error": "not_found"})
                return
            length = min(int(self.headers.get("Content-Length") or 0), 64 * 1024)
            body = self.rfile.read(length).decode()
            form = {name: values[0] for name, values in parse_qs(body).items()}
            status, document = issuer.token(form, self.headers.get("Authorization"))
            self._json(status, document, {"Cache-Control": "no-store"})  # RFC 6749 5.1

        def _json(self, status: int, document: object, headers: Mapping[str, str] | None = None) -> None:
            self._send(status, json.dumps(document).encode(), "application/json", headers or {})

        def _send(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's name)
            pass  # quiet: the tests assert on counters, not on logs

    return Handler
