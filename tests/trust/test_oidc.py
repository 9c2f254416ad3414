"""oix/oidc.py against a real local OpenID Provider on loopback: bearer tokens good and bad
(RFC 7519, RFC 7517, RFC 8725), the JWKS cache and its refreshes, and the portal's
authorization-code sign-in with PKCE (OIDC Core 3.1, RFC 7636)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import jwt
import pytest

from exchange.access import ActorKind, Role
from oix.oidc import (
    OidcSettings,
    OidcVerifier,
    Rejection,
    SignInRefused,
    TokenRejected,
    memberships_from_claim,
    new_pkce_pair,
    pkce_challenge,
)
from tests.servers import free_port
from tests.trust.oidc_issuer import LocalOidcIssuer, SigningKey, b64url, forge_hs256

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

HTTP_TIMEOUT_SECONDS = 5.0
REDIRECT_URI = "http://127.0.0.1:9/login/callback"  # never requested: the test reads the Location


class ManualClock:
    """The verifier's clock for cache timing, moved by the test instead of by sleeping."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings_for(issuer: LocalOidcIssuer, **overrides) -> OidcSettings:
    values = {"issuer": issuer.url, "audience": issuer.audience, "client_id": issuer.client_id,
              "client_secret": issuer.client_secret, **overrides}
    return OidcSettings(**values)


@asynccontextmanager
async def verifier_for(issuer: LocalOidcIssuer, clock: ManualClock | None = None,
                       **overrides) -> AsyncIterator[OidcVerifier]:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS, trust_env=False) as http:
        yield OidcVerifier(settings_for(issuer, **overrides), http, clock=clock or ManualClock())


async def rejection_of(verifier: OidcVerifier, token: str) -> TokenRejected:
    with pytest.raises(TokenRejected) as caught:
        await verifier.verify(token)
    return caught.value


def with_payload(token: str, claims: dict) -> str:
    """The token with its payload replaced and its header and signature kept."""
    header, _, signature = token.split(".")
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"


def payload_of(token: str) -> dict:
    segment = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


# -- valid tokens -----------------------------------------------------------------------------


async def test_valid_token_names_the_user_and_their_roles_from_an_object_claim(oidc_issuer):
    token = oidc_issuer.mint({"sub": "user-42", "name": "Dr Grace Hopper",
                              "oix_orgs": {"RJ1": "admin", "RGT": "sender", "8HV48": "viewer"}})
    async with verifier_for(oidc_issuer) as verifier:
        principal = await verifier.verify(token)
    assert principal.actor == "user-42"
    assert principal.kind is ActorKind.USER
    assert principal.name == "Dr Grace Hopper"
    assert principal.memberships == {"RJ1": Role.ADMIN, "RGT": Role.SENDER, "8HV48": Role.VIEWER}
    assert principal.every_organisation is None


async def test_roles_from_a_list_claim_ignore_unknown_roles_and_bad_entries(oidc_issuer):
    token = oidc_issuer.mint({"oix_orgs": ["RJ1:admin", "RGT:sender", "RGT:viewer", "RXH:superuser",
                                           "no-role", "bad org!:admin", 7, "RDE:Viewer"]})
    async with verifier_for(oidc_issuer) as verifier:
        principal = await verifier.verify(token)
    # RGT is named twice: the stronger role stands. RXH names no OIX role: left out, not fatal.
    assert principal.memberships == {"RJ1": Role.ADMIN, "RGT": Role.SENDER, "RDE": Role.VIEWER}


def test_an_orgs_claim_of_another_shape_grants_nothing():
    assert memberships_from_claim("RJ1:admin") == {}
    assert memberships_from_claim(None) == {}
    assert memberships_from_claim({"RJ1": ["admin"], "RGT": "viewer"}) == {"RGT": Role.VIEWER}


async def test_configured_claims_name_the_user_and_their_organisations(oidc_issuer):
    token = oidc_issuer.mint({"preferred_username": "ada@nhs.net", "display": "Ada",
                              "https://oix.example/orgs": ["RJ1:sender"]})
    async with verifier_for(oidc_issuer, user_claim="preferred_username", name_claim="display",
                            orgs_claim="https://oix.example/orgs") as verifier:
        principal = await verifier.verify(token)
    assert (principal.actor, principal.name) == ("ada@nhs.net", "Ada")
    assert principal.memberships == {"RJ1": Role.SENDER}


async def test_es256_token_verifies_with_an_ec_key_published_without_alg(oidc_issuer):
    assert "alg" not in oidc_issuer.ec_key.public_jwk()
    async with verifier_for(oidc_issuer) as verifier:
        principal = await verifier.verify(oidc_issuer.mint(key=oidc_issuer.ec_key))
    assert principal.actor == oidc_issuer.user["sub"]


async def test_token_without_kid_verifies_only_when_the_jwks_holds_a_single_key(fresh_oidc_issuer):
    issuer = fresh_oidc_issuer
    no_kid = jwt.encode(issuer.claims(), issuer.signing_key.private_key, algorithm="RS256")
    async with verifier_for(issuer) as verifier:
        # OIDC Core 10.1: with several keys published, a kid is required.
        assert (await rejection_of(verifier, no_kid)).reason == Rejection.UNKNOWN_KEY
    issuer.retire_key(issuer.ec_key)
    async with verifier_for(issuer) as verifier:
        assert (await verifier.verify(no_kid)).actor == issuer.user["sub"]


# -- invalid tokens ---------------------------------------------------------------------------


async def test_expired_token_is_rejected_with_an_rfc6750_challenge(oidc_issuer):
    async with verifier_for(oidc_issuer) as verifier:
        rejected = await rejection_of(verifier, oidc_issuer.mint(expires_in=-120))
    assert rejected.reason == Rejection.EXPIRED
    challenge = rejected.www_authenticate()
    assert challenge.startswith('Bearer error="invalid_token", error_description="expired: ')
    assert challenge.count('"') == 4


async def test_token_expired_within_the_leeway_is_still_accepted(oidc_issuer):
    async with verifier_for(oidc_issuer, leeway_seconds=30) as verifier:
        assert (await verifier.verify(oidc_issuer.mint(expires_in=-5))).actor == oidc_issuer.user["sub"]


async def test_token_not_yet_valid_is_rejected(oidc_issuer):
    async with verifier_for(oidc_issuer) as verifier:
        rejected = await rejection_of(verifier, oidc_issuer.mint({"nbf": int(time.time()) + 600}, expires_in=900))
    assert rejected.reason == Rejection.NOT_YET_VALID


async def test_token_for_another_audience_is_rejected(oidc_issuer):
    async with verifier_for(oidc_issuer) as verifier:
        rejected = await rejection_of(verifier, oidc_issuer.mint(audience="another-service"))
        missing = await rejection_of(verifier, oidc_issuer.mint({"aud": None}))
    assert rejected.reason == Rejection.WRONG_AUDIENCE
    assert missing.reason == Rejection.MISSING_CLAIM


async def test_token_from_another_issuer_is_rejected(oidc_issuer):
    async with verifier_for(oidc_issuer) as verifier:
        rejected = await rejection_of(verifier, oidc_issuer.mint(issuer="https://evil.example"))
    assert rejected.reason == Rejection.WRONG_ISSUER


async def test_token_signed_by_an_unpublished_key_is_rejected_after_one_jwks_refetch(fresh_oidc_issuer):
    issuer, clock = fresh_oidc_issuer, ManualClock()
    stranger = issuer.mint(key=issuer.stranger_key)
    async with verifier_for(issuer, clock, jwks_min_refresh_seconds=30) as verifier:
        await verifier.verify(issuer.mint())
        assert issuer.jwks_requests == 1
        clock.advance(31)
        assert (await rejection_of(verifier, stranger)).reason == Rejection.UNKNOWN_KEY
        assert issuer.jwks_requests == 2  # refetched once, in case the provider rotated
        for _ in range(20):  # within the minimum interval: no more fetches, however many
            assert (await rejection_of(verifier, stranger)).reason == Rejection.UNKNOWN_KEY
        assert issuer.jwks_requests == 2
        clock.advance(31)
        await rejection_of(verifier, stranger)
        assert issuer.jwks_requests == 3


async def test_token_naming_a_published_kid_but_signed_by_another_key_has_a_bad_signature(oidc_issuer):
    forged = oidc_issuer.mint(key=oidc_issuer.stranger_key, kid=oidc_issuer.signing_key.kid)
    async with verifier_for(oidc_issuer) as verifier:
        assert (await rejection_of(verifier, forged)).reason == Rejection.BAD_SIGNATURE


async def test_tampered_payload_no_longer_matches_the_signature(oidc_issuer):
    token = oidc_issuer.mint({"oix_orgs": {"RJ1": "viewer"}})
    raised = with_payload(token, {**payload_of(token), "oix_orgs": {"RJ1": "admin"}})
    async with verifier_for(oidc_issuer) as verifier:
        assert (await verifier.verify(token)).memberships == {"RJ1": Role.VIEWER}
        assert (await rejection_of(verifier, raised)).reason == Rejection.BAD_SIGNATURE


async def test_unsigned_alg_none_token_is_rejected(oidc_issuer):
    unsigned = jwt.encode(oidc_issuer.claims(), None, algorithm="none",
                          headers={"kid": oidc_issuer.signing_key.kid})
    async with verifier_for(oidc_issuer) as verifier:
        assert (await rejection_of(verifier, unsigned)).reason == Rejection.DISALLOWED_ALGORITHM


async def test_hs256_token_keyed_with_the_public_key_is_rejected(oidc_issuer):
    """RFC 8725 2.1: the classic algorithm confusion, HMAC keyed with the provider's public key."""
    key = oidc_issuer.signing_key
    async with verifier_for(oidc_issuer) as verifier:
        for secret in (key.public_pem(), json.dumps(key.public_jwk()).encode()):
            forged = forge_hs256(oidc_issuer.claims(), secret, key.kid)
            assert (await rejection_of(verifier, forged)).reason == Rejection.DISALLOWED_ALGORITHM


async def test_token_whose_alg_does_not_fit_the_named_key_is_rejected(oidc_issuer):
    async with verifier_for(oidc_issuer) as verifier:
        # An RS256 token naming the EC key, and a PS256 token naming an RS256-only key.
        rsa_for_ec = oidc_issuer.mint(kid=oidc_issuer.ec_key.kid)
        pss = SigningKey(oidc_issuer.signing_key.kid, "PS256", oidc_issuer.signing_key.private_key)
        for token in (rsa_for_ec, pss.sign(oidc_issuer.claims())):
            assert (await rejection_of(verifier, token)).reason == Rejection.DISALLOWED_ALGORITHM


def test_settings_refuse_symmetric_and_none_algorithms():
    for algorithms in (("HS256",), ("RS256", "none"), ()):
        with pytest.raises(ValueError):
            OidcSettings(issuer="https://idp.example", audience="oix", algorithms=algorithms)


async def test_token_without_the_user_claim_is_rejected(oidc_issuer):
    async with verifier_for(oidc_issuer) as verifier:
        assert (await rejection_of(verifier, oidc_issuer.mint({"sub": None}))).reason == Rejection.MISSING_CLAIM
    async with verifier_for(oidc_issuer, user_claim="email") as verifier:
        assert (await rejection_of(verifier, oidc_issuer.mint({"email": ""}))).reason == Rejection.MISSING_CLAIM


async def test_garbage_is_malformed_not_a_crash(oidc_issuer):
    async with verifier_for(oidc_issuer) as verifier:
        for garbage in ("", "not-a-jwt", "a.b.c", "x" * 20_000, "eyJhbGciOiJSUzI1NiJ9.e30"):
            assert (await rejection_of(verifier, garbage)).reason == Rejection.MALFORMED


# -- the JWKS cache ---------------------------------------------------------------------------


async def test_jwks_is_fetched_once_for_many_and_concurrent_verifications(fresh_oidc_issuer):
    issuer = fresh_oidc_issuer
    tokens = [issuer.mint({"sub": f"user-{n}"}) for n in range(20)]
    # No minimum refresh interval: the waiting tasks share the one fetch, not a rate limit.
    async with verifier_for(issuer, jwks_min_refresh_seconds=0) as verifier:
        principals = await asyncio.gather(*(verifier.verify(token) for token in tokens))
        for token in tokens:
            await verifier.verify(token)
    assert [p.actor for p in principals] == [f"user-{n}" for n in range(20)]
    assert issuer.jwks_requests == 1
    assert issuer.discovery_requests == 1


async def test_jwks_url_configured_skips_discovery(fresh_oidc_issuer):
    issuer = fresh_oidc_issuer
    async with verifier_for(issuer, jwks_url=issuer.jwks_url) as verifier:
        await verifier.verify(issuer.mint())
    assert (issuer.discovery_requests, issuer.jwks_requests) == (0, 1)


async def test_jwks_is_refetched_after_its_ttl(fresh_oidc_issuer):
    issuer, clock = fresh_oidc_issuer, ManualClock()
    token = issuer.mint()
    async with verifier_for(issuer, clock, jwks_ttl_seconds=600) as verifier:
        await verifier.verify(token)
        clock.advance(599)
        await verifier.verify(token)
        assert issuer.jwks_requests == 1
        clock.advance(2)
        await verifier.verify(token)
        assert issuer.jwks_requests == 2


async def test_jwks_cache_control_max_age_overrides_the_ttl(fresh_oidc_issuer):
    issuer, clock = fresh_oidc_issuer, ManualClock()
    issuer.jwks_cache_control = "public, max-age=60"
    token = issuer.mint()
    async with verifier_for(issuer, clock, jwks_ttl_seconds=3600) as verifier:
        await verifier.verify(token)
        clock.advance(59)
        await verifier.verify(token)
        assert issuer.jwks_requests == 1
        clock.advance(2)
        await verifier.verify(token)
        assert issuer.jwks_requests == 2


async def test_a_rotated_key_verifies_after_a_refetch(fresh_oidc_issuer):
    issuer, clock = fresh_oidc_issuer, ManualClock()
    async with verifier_for(issuer, clock, jwks_min_refresh_seconds=30) as verifier:
        old_token = issuer.mint()
        await verifier.verify(old_token)
        new_key = issuer.rotate_key()
        new_token = issuer.mint()
        assert jwt.get_unverified_header(new_token)["kid"] == new_key.kid != jwt.get_unverified_header(old_token)["kid"]
        clock.advance(31)
        assert (await verifier.verify(new_token)).actor == issuer.user["sub"]
        assert issuer.jwks_requests == 2
        assert (await verifier.verify(old_token)).actor == issuer.user["sub"]  # still published
        assert issuer.jwks_requests == 2


async def test_a_retired_key_is_rejected_once_the_jwks_is_refreshed(fresh_oidc_issuer):
    issuer, clock = fresh_oidc_issuer, ManualClock()
    old_key, old_token = issuer.signing_key, issuer.mint()
    async with verifier_for(issuer, clock, jwks_ttl_seconds=600) as verifier:
        await verifier.verify(old_token)
        issuer.rotate_key()
        issuer.retire_key(old_key)
        clock.advance(601)
        assert (await rejection_of(verifier, old_token)).reason == Rejection.UNKNOWN_KEY
        assert (await verifier.verify(issuer.mint())).actor == issuer.user["sub"]


async def test_unreachable_provider_rejects_with_provider_unreachable_and_backs_off():
    closed = f"http://127.0.0.1:{free_port()}"
    with LocalOidcIssuer() as issuer:
        token = issuer.mint()
    clock = ManualClock()
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS, trust_env=False) as http:
        for settings in (OidcSettings(issuer=closed, audience="oix"),
                         OidcSettings(issuer=closed, audience="oix", jwks_url=f"{closed}/jwks")):
            verifier = OidcVerifier(settings, http, clock=clock)
            for _ in range(3):
                rejected = await rejection_of(verifier, token)
                assert rejected.reason == Rejection.PROVIDER_UNREACHABLE
                assert closed.removeprefix("http://") in rejected.message


async def test_provider_answering_503_is_unreachable_then_recovers(fresh_oidc_issuer):
    issuer, clock = fresh_oidc_issuer, ManualClock()
    issuer.jwks_status = 503
    token = issuer.mint()
    async with verifier_for(issuer, clock, jwks_min_refresh_seconds=30) as verifier:
        assert (await rejection_of(verifier, token)).reason == Rejection.PROVIDER_UNREACHABLE
        for _ in range(10):  # failing fast within the interval, without asking again
            assert (await rejection_of(verifier, token)).reason == Rejection.PROVIDER_UNREACHABLE
        assert issuer.jwks_requests == 1
        issuer.jwks_status = 200
        clock.advance(31)
        assert (await verifier.verify(token)).actor == issuer.user["sub"]
        assert issuer.jwks_requests == 2


# -- portal sign-in: authorization code with PKCE -----------------------------------------------


def test_pkce_challenge_is_rfc7636_s256():
    # RFC 7636 Appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    verifier, challenge = new_pkce_pair()
    assert 43 <= len(verifier) <= 128 and challenge == pkce_challenge(verifier)
    assert new_pkce_pair().verifier != verifier


async def authorize(verifier: OidcVerifier, http: httpx.AsyncClient, state: str, nonce: str,
                    code_verifier: str) -> dict[str, str]:
    """Follow the sign-in URL to the provider and read the redirect back to the portal."""
    url = await verifier.authorization_url(REDIRECT_URI, state, nonce, code_verifier)
    response = await http.get(url)
    assert response.status_code == 302
    location = httpx.URL(response.headers["location"])
    assert str(location.copy_with(query=None)) == REDIRECT_URI
    return dict(location.params)


@pytest.mark.parametrize("token_endpoint_auth", ["client_secret_basic", "client_secret_post"])
async def test_sign_in_with_code_and_pkce_gives_the_user(oidc_issuer, token_endpoint_auth):
    pkce = new_pkce_pair()
    async with verifier_for(oidc_issuer, token_endpoint_auth=token_endpoint_auth) as verifier:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS, trust_env=False) as http:
            answer = await authorize(verifier, http, "state-1", "nonce-1", pkce.verifier)
        assert answer["state"] == "state-1"
        grant = oidc_issuer.authorizations[answer["code"]]
        assert (grant.code_challenge, grant.code_challenge_method) == (pkce.challenge, "S256")
        assert grant.nonce == "nonce-1" and "openid" in grant.scope.split()
        principal = await verifier.exchange_code(answer["code"], REDIRECT_URI, pkce.verifier, "nonce-1")
    assert principal.actor == oidc_issuer.user["sub"] and principal.kind is ActorKind.USER
    assert principal.memberships == {"RJ1": Role.ADMIN, "RGT": Role.VIEWER}


async def test_sign_in_as_a_public_client_uses_pkce_alone(fresh_oidc_issuer):
    issuer = fresh_oidc_issuer
    issuer.client_secret = None
    async with verifier_for(issuer) as verifier:
        request = await verifier.start_sign_in(REDIRECT_URI)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS, trust_env=False) as http:
            answer = await authorize(verifier, http, request.state, request.nonce, request.code_verifier)
        principal = await verifier.exchange_code(answer["code"], REDIRECT_URI, request.code_verifier, request.nonce)
    assert principal.actor == issuer.user["sub"]


async def test_a_wrong_code_verifier_is_refused_by_the_provider(oidc_issuer):
    pkce = new_pkce_pair()
    async with verifier_for(oidc_issuer) as verifier:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS, trust_env=False) as http:
            answer = await authorize(verifier, http, "s", "n", pkce.verifier)
        with pytest.raises(SignInRefused) as refused:
            await verifier.exchange_code(answer["code"], REDIRECT_URI, new_pkce_pair().verifier, "n")
    assert refused.value.reason == "invalid_grant"
    assert "PKCE verification failed" in refused.value.message


async def test_a_code_is_good_once_and_a_wrong_secret_is_refused(oidc_issuer):
    pkce = new_pkce_pair()
    async with verifier_for(oidc_issuer) as verifier:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS, trust_env=False) as http:
            answer = await authorize(verifier, http, "s", "n", pkce.verifier)
            second = await authorize(verifier, http, "s", "n", pkce.verifier)
        await verifier.exchange_code(answer["code"], REDIRECT_URI, pkce.verifier, "n")
        with pytest.raises(SignInRefused) as replayed:
            await verifier.exchange_code(answer["code"], REDIRECT_URI, pkce.verifier, "n")
    async with verifier_for(oidc_issuer, client_secret="not-the-secret") as verifier:
        with pytest.raises(SignInRefused) as wrong_secret:
            await verifier.exchange_code(second["code"], REDIRECT_URI, pkce.verifier, "n")
    assert replayed.value.reason == "invalid_grant"
    assert wrong_secret.value.reason == "invalid_client"


async def test_an_id_token_with_another_nonce_is_rejected(oidc_issuer):
    pkce = new_pkce_pair()
    async with verifier_for(oidc_issuer) as verifier:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS, trust_env=False) as http:
            answer = await authorize(verifier, http, "s", "nonce-sent", pkce.verifier)
        with pytest.raises(TokenRejected) as rejected:
            await verifier.exchange_code(answer["code"], REDIRECT_URI, pkce.verifier, "nonce-of-another-sign-in")
    assert rejected.value.reason == Rejection.WRONG_NONCE


async def test_sign_in_is_refused_without_a_client_or_a_reachable_provider(oidc_issuer):
    async with verifier_for(oidc_issuer, client_id=None) as verifier:
        assert not verifier.offers_sign_in
        with pytest.raises(SignInRefused) as unconfigured:
            await verifier.start_sign_in(REDIRECT_URI)
    assert unconfigured.value.reason == "not-configured"
    closed = f"http://127.0.0.1:{free_port()}"
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS, trust_env=False) as http:
        verifier = OidcVerifier(OidcSettings(issuer=closed, audience="oix", client_id="portal"), http)
        with pytest.raises(SignInRefused) as unreachable:
            await verifier.start_sign_in(REDIRECT_URI)
    assert unreachable.value.reason == Rejection.PROVIDER_UNREACHABLE


# -- settings ---------------------------------------------------------------------------------


def test_settings_from_the_environment():
    assert OidcSettings.from_environment({}) is None
    settings = OidcSettings.from_environment({
        "OIX_OIDC_ISSUER": "https://idp.example", "OIX_OIDC_CLIENT_ID": "oix-portal",
        "OIX_OIDC_ORGS_CLAIM": "nhs_orgs", "OIX_OIDC_ALGORITHMS": "RS256, ES256", "OIX_OIDC_JWKS_TTL": "600"})
    assert settings is not None
    assert (settings.audience, settings.orgs_claim, settings.algorithms, settings.jwks_ttl_seconds) == (
        "oix-portal", "nhs_orgs", ("RS256", "ES256"), 600.0)
    with pytest.raises(ValueError):
        OidcSettings.from_environment({"OIX_OIDC_ISSUER": "https://idp.example"})  # no audience


CHILD_VERIFIES = """
import asyncio, os, sys
import httpx
from oix.oidc import OidcSettings, OidcVerifier

async def main():
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        principal = await OidcVerifier(OidcSettings.from_environment(os.environ), http).verify(sys.argv[1])
    print(principal.actor, sorted(principal.memberships.items()))

asyncio.run(main())
"""


def test_the_issuer_serves_a_separate_process_configured_from_its_environment(oidc_issuer):
    """What a live `oix serve` started with `oidc_issuer.environment()` does: fetch the keys
    over loopback from another process and verify the session issuer's tokens."""
    token = oidc_issuer.mint({"sub": "child-user", "oix_orgs": ["RJ1:sender"]})
    env = {**os.environ, **oidc_issuer.environment()}
    child = subprocess.run([sys.executable, "-c", CHILD_VERIFIES, token], env=env, capture_output=True,
                           text=True, timeout=60, cwd=Path(__file__).parents[2])
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "child-user [('RJ1', <Role.SENDER: 'sender'>)]"
