"""OpenID Connect at the HTTP edge: verify bearer tokens from the configured provider into a
`Principal`, and run the portal's authorization-code sign-in with PKCE. JOSE is PyJWT's;
this module only chooses keys, algorithms and claims. No Starlette here: the routes map
`TokenRejected` to 401, and any `OidcError` of a sign-in to the portal's error page."""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import quote_plus

import httpx
import jwt

from exchange.access import ActorKind, Principal, Role
from exchange.organisations import SLUG

# RFC 7518 3.1 / RFC 8037: the asymmetric JWS algorithms. HMAC ("HS*") and "none" are never
# accepted: a provider's public key must not double as a shared secret (RFC 8725 2.1, 3.1).
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                   "ES256", "ES384", "ES512", "EdDSA"})
MAX_TOKEN_BYTES = 16 * 1024
MAX_DOCUMENT_BYTES = 1024 * 1024  # a discovery document, a JWKS or a token response
DISCOVERY_PATH = "/.well-known/openid-configuration"  # OIDC Discovery 1.0, 4
ROLE_RANK = {role: rank for rank, role in enumerate(Role)}  # viewer < sender < admin


class Rejection(enum.StrEnum):
    """Why a token was not accepted: short, stable, safe to show to the caller."""

    MALFORMED = "malformed"
    DISALLOWED_ALGORITHM = "disallowed-algorithm"
    UNKNOWN_KEY = "unknown-key"
    BAD_SIGNATURE = "bad-signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    WRONG_AUDIENCE = "wrong-audience"
    WRONG_ISSUER = "wrong-issuer"
    WRONG_NONCE = "wrong-nonce"
    MISSING_CLAIM = "missing-claim"
    PROVIDER_UNREACHABLE = "provider-unreachable"


class OidcError(Exception):
    """Base of this module's failures: a short machine `reason`, a human `message`."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class TokenRejected(OidcError):
    """A bearer token or an ID token was not accepted (`reason` is a Rejection); the caller
    answers 401."""

    def www_authenticate(self) -> str:
        """The WWW-Authenticate value of the 401 (RFC 6750 3, 3.1: error="invalid_token")."""
        # RFC 6750 3: error_description is %x20-21 / %x23-5B / %x5D-7E, so no '"' or '\'.
        description = re.sub(r'[^\x20-\x7e]|["\\]', "'", f"{self.reason}: {self.message}")
        return f'Bearer error="invalid_token", error_description="{description}"'


class SignInRefused(OidcError):
    """A portal sign-in could not complete: the token endpoint refused the code (`reason` is
    its OAuth error code, RFC 6749 5.2, such as "invalid_grant" for a wrong PKCE verifier),
    the provider could not be reached, or no client is configured. The ID token it brings
    back is checked like any token: a bad one raises TokenRejected."""


class _ProviderFailure(Exception):
    """The provider could not be reached or answered something unusable."""


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    audience: str
    jwks_url: str | None = None  # None: the jwks_uri of the issuer's discovery document
    user_claim: str = "sub"
    name_claim: str = "name"
    orgs_claim: str = "oix_orgs"  # {"RJ1": "admin"} or ["RJ1:admin", ...]
    client_id: str | None = None  # None: the portal offers no OIDC sign-in
    client_secret: str | None = field(default=None, repr=False)  # None: a public client (PKCE only)
    token_endpoint_auth: str = "client_secret_basic"  # or "client_secret_post" (OIDC Core 9)
    scopes: tuple[str, ...] = ("openid", "profile")
    algorithms: tuple[str, ...] = ("RS256", "ES256", "PS256")
    jwks_ttl_seconds: float = 3600.0  # unless the JWKS response's Cache-Control says otherwise
    jwks_min_refresh_seconds: float = 30.0  # between fetches forced by unknown kids or failures
    leeway_seconds: float = 30.0  # clock skew allowed on exp, nbf and iat
    http_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience:
            raise ValueError("OIDC needs both an issuer and an audience")
        if not self.algorithms or not set(self.algorithms) <= ASYMMETRIC_ALGORITHMS:
            raise ValueError(f"OIDC algorithms must be among {sorted(ASYMMETRIC_ALGORITHMS)}; "
                             f"got {list(self.algorithms)} (HMAC and 'none' are never accepted)")
        if self.token_endpoint_auth not in ("client_secret_basic", "client_secret_post"):
            raise ValueError(f"unknown token endpoint authentication '{self.token_endpoint_auth}'")

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> OidcSettings | None:
        """The OIX_OIDC_* variables of `env`; None when OIX_OIDC_ISSUER is not set. The
        audience defaults to the client id: the portal's own tokens are addressed to it."""
        issuer = env.get("OIX_OIDC_ISSUER", "").strip()
        if not issuer:
            return None

        def text(name: str) -> str | None:
            return env.get(name, "").strip() or None

        values: dict[str, Any] = {
            "issuer": issuer,
            "audience": text("OIX_OIDC_AUDIENCE") or text("OIX_OIDC_CLIENT_ID") or "",
            "jwks_url": text("OIX_OIDC_JWKS_URL"),
            "client_id": text("OIX_OIDC_CLIENT_ID"),
            "client_secret": text("OIX_OIDC_CLIENT_SECRET"),
        }
        for name, field_name in (("OIX_OIDC_USER_CLAIM", "user_claim"), ("OIX_OIDC_NAME_CLAIM", "name_claim"),
                                 ("OIX_OIDC_ORGS_CLAIM", "orgs_claim"),
                                 ("OIX_OIDC_TOKEN_ENDPOINT_AUTH", "token_endpoint_auth")):
            if text(name):
                values[field_name] = text(name)
        for name, field_name in (("OIX_OIDC_SCOPES", "scopes"), ("OIX_OIDC_ALGORITHMS", "algorithms")):
            if text(name):
                values[field_name] = tuple(v for v in re.split(r"[\s,]+", text(name) or "") if v)
        if text("OIX_OIDC_JWKS_TTL"):
            values["jwks_ttl_seconds"] = float(text("OIX_OIDC_JWKS_TTL") or 0)
        return cls(**values)


class PkcePair(NamedTuple):
    """RFC 7636 4.1-4.2: a high-entropy code verifier and its S256 code challenge."""

    verifier: str
    challenge: str


def pkce_challenge(verifier: str) -> str:
    # RFC 7636 4.2: BASE64URL-ENCODE(SHA256(ASCII(code_verifier))), without padding.
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_pkce_pair() -> PkcePair:
    # RFC 7636 4.1: 43-128 unreserved characters; 64 random bytes give 86.
    verifier = secrets.token_urlsafe(64)
    return PkcePair(verifier, pkce_challenge(verifier))


@dataclass(frozen=True)
class AuthorizationRequest:
    """A started sign-in: send the browser to `url`; keep `state`, `nonce` and
    `code_verifier` (in the sign-in cookie) for the callback's `exchange_code`."""

    url: str
    state: str
    nonce: str
    code_verifier: str


def memberships_from_claim(value: object) -> dict[str, Role]:
    """The organisation roles a token grants, from {"RJ1": "admin"} or ["RJ1:admin"]. Entries
    naming an unknown role or an invalid organisation code are ignored, not fatal; an
    organisation named twice keeps its strongest role."""
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = [tuple(entry.rsplit(":", 1)) for entry in value if isinstance(entry, str) and ":" in entry]
    else:
        return {}
    memberships: dict[str, Role] = {}
    for org, role_name in pairs:
        if not isinstance(org, str) or not SLUG.match(org) or not isinstance(role_name, str):
            continue
        try:
            role = Role(role_name.strip().lower())
        except ValueError:
            continue
        if org not in memberships or ROLE_RANK[role] > ROLE_RANK[memberships[org]]:
            memberships[org] = role
    return memberships


class _JwkSet:
    """One fetched JWKS: signing keys by kid (RFC 7517 5), each turned into a PyJWK for an
    algorithm on first use."""

    def __init__(self, document: object, expires_at: float):
        if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
            raise _ProviderFailure("the JWKS is not a JSON object with a 'keys' array (RFC 7517 5)")
        # RFC 7517 4.2: keys marked for encryption are not for verifying signatures.
        self.keys = [k for k in document["keys"] if isinstance(k, Mapping) and k.get("use", "sig") == "sig"]
        self.expires_at = expires_at
        self._parsed: dict[tuple[str | None, str], jwt.PyJWK] = {}

    def find(self, kid: str | None) -> Mapping[str, Any] | None:
        if kid is None:
            # OIDC Core 10.1: a kid may be left out only when the set holds a single key.
            return self.keys[0] if len(self.keys) == 1 else None
        return next((k for k in self.keys if k.get("kid") == kid), None)

    def key_for(self, jwk: Mapping[str, Any], algorithm: str) -> jwt.PyJWK:
        cache_key = (jwk.get("kid"), algorithm)
        if cache_key not in self._parsed:
            # RFC 7517 4.4: a key that names its algorithm is used with that one only.
            if jwk.get("alg", algorithm) != algorithm:
                raise TokenRejected(Rejection.DISALLOWED_ALGORITHM,
                                    f"key '{jwk.get('kid')}' is for {jwk.get('alg')}, not {algorithm}")
            try:
                # The PyJWK is bound to the algorithm: PyJWT then refuses any other alg.
                self._parsed[cache_key] = jwt.PyJWK(dict(jwk), algorithm=algorithm)
            except jwt.PyJWTError:
                raise TokenRejected(Rejection.DISALLOWED_ALGORITHM,
                                    f"key '{jwk.get('kid')}' ({jwk.get('kty')}) cannot verify {algorithm}") from None
        return self._parsed[cache_key]


def _max_age(cache_control: str | None) -> float | None:
    # RFC 9111 5.2.2.1: max-age=delta-seconds.
    match = re.search(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", cache_control or "", re.IGNORECASE)
    return float(match.group(1)) if match else None


def _rejection(error: jwt.PyJWTError) -> TokenRejected:
    """PyJWT's verdict as a Rejection (most specific exception classes first)."""
    table: tuple[tuple[type[jwt.PyJWTError], Rejection], ...] = (
        (jwt.ExpiredSignatureError, Rejection.EXPIRED),  # RFC 7519 4.1.4
        (jwt.ImmatureSignatureError, Rejection.NOT_YET_VALID),  # RFC 7519 4.1.5, 4.1.6
        (jwt.InvalidAudienceError, Rejection.WRONG_AUDIENCE),  # RFC 7519 4.1.3
        (jwt.InvalidIssuerError, Rejection.WRONG_ISSUER),  # RFC 7519 4.1.1
        (jwt.MissingRequiredClaimError, Rejection.MISSING_CLAIM),
        (jwt.InvalidSignatureError, Rejection.BAD_SIGNATURE),
        (jwt.InvalidAlgorithmError, Rejection.DISALLOWED_ALGORITHM),
    )
    reason = next((reason for kind, reason in table if isinstance(error, kind)), Rejection.MALFORMED)
    return TokenRejected(reason, str(error) or reason)


class OidcVerifier:
    """Verifies tokens of one provider. It shares the app's `httpx.AsyncClient` and keeps the
    provider's discovery document and JWKS cached; use it from one event loop."""

    def __init__(self, settings: OidcSettings, http_client: httpx.AsyncClient, *,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._http = http_client
        self._clock = clock
        self._keys: _JwkSet | None = None
        self._keys_lock = asyncio.Lock()
        self._last_jwks_attempt: float | None = None
        self._last_jwks_failure: str | None = None
        self._metadata: dict[str, Any] | None = None
        self._metadata_expires_at = 0.0
        self._metadata_lock = asyncio.Lock()

    # -- bearer tokens ---------------------------------------------------------------------

    async def verify(self, token: str) -> Principal:
        """The user a bearer token (RFC 6750 2.1) names, or TokenRejected."""
        claims = await self._verified_claims(token, audience=self.settings.audience)
        return self._principal(claims)

    async def _verified_claims(self, token: str, *, audience: str) -> dict[str, Any]:
        if not token or len(token) > MAX_TOKEN_BYTES:
            raise TokenRejected(Rejection.MALFORMED, "the token is empty or too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise TokenRejected(Rejection.MALFORMED, f"not a signed JWT: {error}") from None
        algorithm = header.get("alg")
        # RFC 8725 3.1: the algorithm comes from our list, never from the token alone.
        if algorithm not in self.settings.algorithms:
            raise TokenRejected(Rejection.DISALLOWED_ALGORITHM,
                                f"alg '{algorithm}' is not accepted (accepted: {', '.join(self.settings.algorithms)})")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected(Rejection.MALFORMED, "the kid header is not a string")
        key = await self._signing_key(kid, algorithm)
        try:
            claims = jwt.decode(
                token, key, algorithms=[algorithm], audience=audience, issuer=self.settings.issuer,
                leeway=self.settings.leeway_seconds,
                # RFC 7519 4.1; OIDC Core 2: iss, sub, aud, exp and iat are required in an ID token.
                options={"require": ["iss", "aud", "exp", "iat", self.settings.user_claim]},
            )
        except jwt.PyJWTError as error:
            raise _rejection(error) from None
        user = claims.get(self.settings.user_claim)
        if not isinstance(user, str) or not user:
            raise TokenRejected(Rejection.MISSING_CLAIM, f"the '{self.settings.user_claim}' claim is not a user name")
        return claims

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        # OIDC Core 5.7: sub is unique only within an issuer; OIX trusts exactly one issuer.
        name = claims.get(self.settings.name_claim)
        return Principal(
            actor=claims[self.settings.user_claim],
            kind=ActorKind.USER,
            memberships=memberships_from_claim(claims.get(self.settings.orgs_claim)),
            name=name if isinstance(name, str) else "",
        )

    async def _signing_key(self, kid: str | None, algorithm: str) -> jwt.PyJWK:
        keys = self._keys
        if keys is None or self._clock() >= keys.expires_at:
            keys = await self._refresh_keys(seen=keys)
        jwk = keys.find(kid)
        if jwk is None:
            # The provider may have rotated its keys (OIDC Core 10.1.1): fetch once more,
            # unless a fetch happened within jwks_min_refresh_seconds.
            keys = await self._refresh_keys(seen=keys)
            jwk = keys.find(kid)
        if jwk is None:
            raise TokenRejected(Rejection.UNKNOWN_KEY,
                                f"the provider publishes no key '{kid}'" if kid else "the token names no key (kid)")
        return keys.key_for(jwk, algorithm)

    async def _refresh_keys(self, *, seen: _JwkSet | None) -> _JwkSet:
        """A fresh JWKS, shared by every task waiting here: one fetch at a time, and at most
        one per jwks_min_refresh_seconds, so unknown kids cannot hammer the provider."""
        async with self._keys_lock:
            if self._keys is not None and self._keys is not seen:
                return self._keys  # fetched by another task while this one waited
            now = self._clock()
            recent = (self._last_jwks_attempt is not None
                      and now - self._last_jwks_attempt < self.settings.jwks_min_refresh_seconds)
            if recent and self._last_jwks_failure is not None:
                raise TokenRejected(Rejection.PROVIDER_UNREACHABLE, self._last_jwks_failure)
            if recent and self._keys is not None:
                return self._keys
            self._last_jwks_attempt = now
            try:
                url = self.settings.jwks_url or (await self._provider_metadata()).get("jwks_uri")
                if not isinstance(url, str):
                    raise _ProviderFailure("the discovery document names no jwks_uri")
                document, max_age = await self._get_json(url)
                ttl = self.settings.jwks_ttl_seconds if max_age is None else max_age
                ttl = max(ttl, self.settings.jwks_min_refresh_seconds)
                self._keys = _JwkSet(document, expires_at=now + ttl)
            except _ProviderFailure as failure:
                self._last_jwks_failure = f"the provider's keys could not be fetched: {failure}"
                raise TokenRejected(Rejection.PROVIDER_UNREACHABLE, self._last_jwks_failure) from None
            self._last_jwks_failure = None
            return self._keys

    # -- provider metadata and HTTP ---------------------------------------------------------

    async def _provider_metadata(self) -> dict[str, Any]:
        """The issuer's discovery document (OIDC Discovery 4), cached for jwks_ttl_seconds."""
        async with self._metadata_lock:
            if self._metadata is not None and self._clock() < self._metadata_expires_at:
                return self._metadata
            document, _ = await self._get_json(self.settings.issuer.rstrip("/") + DISCOVERY_PATH)
            # OIDC Discovery 4.3: the document's issuer is exactly the one configured.
            if not isinstance(document, dict) or document.get("issuer") != self.settings.issuer:
                raise _ProviderFailure(f"the discovery document is not for issuer {self.settings.issuer}")
            self._metadata = document
            self._metadata_expires_at = self._clock() + self.settings.jwks_ttl_seconds
            return document

    async def _get_json(self, url: str) -> tuple[object, float | None]:
        status, document, headers = await self._request_json("GET", url)
        if status != 200:
            raise _ProviderFailure(f"GET {url} answered {status}")
        return document, _max_age(headers.get("cache-control"))

    async def _request_json(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                            **kwargs: Any) -> tuple[int, object, httpx.Headers]:
        """One request to the provider, its body read up to MAX_DOCUMENT_BYTES and parsed."""
        try:
            async with self._http.stream(method, url, headers={"Accept": "application/json", **(headers or {})},
                                         timeout=self.settings.http_timeout_seconds, **kwargs) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise _ProviderFailure(f"{method} {url} answered more than {MAX_DOCUMENT_BYTES} bytes")
        except httpx.HTTPError as error:
            raise _ProviderFailure(f"{method} {url} failed: {error.__class__.__name__} {error}".strip()) from None
        try:
            document = json.loads(body) if body else None
        except ValueError:
            document = None
        if document is None and response.status_code == 200:
            raise _ProviderFailure(f"{method} {url} did not answer JSON")
        return response.status_code, document, response.headers

    # -- portal sign-in: authorization code flow with PKCE (OIDC Core 3.1, RFC 7636) -------

    @property
    def offers_sign_in(self) -> bool:
        """Whether the portal offers "sign in with your organisation" (a client is configured)."""
        return self.settings.client_id is not None

    def _client_id(self) -> str:
        if self.settings.client_id is None:
            raise SignInRefused("not-configured", "no OIDC client is configured for portal sign-in")
        return self.settings.client_id

    async def _sign_in_metadata(self) -> dict[str, Any]:
        try:
            return await self._provider_metadata()
        except _ProviderFailure as failure:
            raise SignInRefused(Rejection.PROVIDER_UNREACHABLE, str(failure)) from None

    async def authorization_url(self, redirect_uri: str, state: str, nonce: str, code_verifier: str) -> str:
        """Where to send the browser to sign in (OIDC Core 3.1.2.1, RFC 7636 4.3)."""
        client_id = self._client_id()
        endpoint = (await self._sign_in_metadata()).get("authorization_endpoint")
        if not isinstance(endpoint, str):
            raise SignInRefused(Rejection.PROVIDER_UNREACHABLE,
                                "the discovery document names no authorization_endpoint")
        return str(httpx.URL(endpoint).copy_merge_params({
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.settings.scopes),
            "state": state,  # RFC 6749 10.12: CSRF protection, checked by the callback route
            "nonce": nonce,  # OIDC Core 3.1.2.1: binds the ID token to this browser session
            "code_challenge": pkce_challenge(code_verifier),
            "code_challenge_method": "S256",
        }))

    async def start_sign_in(self, redirect_uri: str) -> AuthorizationRequest:
        """A new sign-in with fresh state, nonce and PKCE verifier."""
        state, nonce, pkce = secrets.token_urlsafe(32), secrets.token_urlsafe(32), new_pkce_pair()
        url = await self.authorization_url(redirect_uri, state, nonce, pkce.verifier)
        return AuthorizationRequest(url, state, nonce, pkce.verifier)

    async def exchange_code(self, code: str, redirect_uri: str, code_verifier: str, nonce: str) -> Principal:
        """The user an authorization code signs in: the code is exchanged at the token
        endpoint (OIDC Core 3.1.3.1) and the ID token verified (3.1.3.7), nonce included."""
        client_id = self._client_id()
        if not nonce:
            raise ValueError("exchange_code needs the nonce sent in the authorization request")
        endpoint = (await self._sign_in_metadata()).get("token_endpoint")
        if not isinstance(endpoint, str):
            raise SignInRefused(Rejection.PROVIDER_UNREACHABLE, "the discovery document names no token_endpoint")
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": code_verifier}  # RFC 7636 4.5
        headers: dict[str, str] = {}
        secret = self.settings.client_secret
        if secret is None:
            form["client_id"] = client_id  # RFC 6749 4.1.3: a public client names itself
        elif self.settings.token_endpoint_auth == "client_secret_post":
            form.update(client_id=client_id, client_secret=secret)  # RFC 6749 2.3.1
        else:
            # RFC 6749 2.3.1: id and secret are form-urlencoded, then HTTP Basic (RFC 7617).
            pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        try:
            status, answer, _ = await self._request_json("POST", endpoint, data=form, headers=headers)
        except _ProviderFailure as failure:
            raise SignInRefused(Rejection.PROVIDER_UNREACHABLE, str(failure)) from None
        answer = answer if isinstance(answer, dict) else {}
        if status != 200:
            # RFC 6749 5.2: {"error": "invalid_grant", "error_description": "..."}
            error = str(answer.get("error") or f"http-{status}")
            description = str(answer.get("error_description") or "no description")
            raise SignInRefused(error, f"the identity provider refused the sign-in ({error}): {description}")
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise SignInRefused("invalid-response", "the token endpoint returned no id_token (OIDC Core 3.1.3.3)")
        claims = await self._verified_claims(id_token, audience=client_id)
        # OIDC Core 3.1.3.7 (4, 5): with several audiences, azp must be this client.
        if isinstance(claims.get("aud"), list) and len(claims["aud"]) > 1 and claims.get("azp") != client_id:
            raise TokenRejected(Rejection.WRONG_AUDIENCE,
                                "the ID token has several audiences and azp is not this client")
        # OIDC Core 3.1.3.7 (11): the nonce sent in the authorization request comes back.
        if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise TokenRejected(Rejection.WRONG_NONCE, "the ID token's nonce is not this sign-in's")
        return self._principal(claims)
