"""Webhooks: an organisation subscribes a URL to exchange events (an emergency transfer arriving,
a transfer delivered), and each event is POSTed there as JSON by a job on the queue — signed,
retried with backoff, at least once.

What a receiver gets, and how it checks it:

    POST <url>
    Content-Type: application/json
    X-OIX-Event: transfer.emergency
    X-OIX-Delivery: 1234          the job id: the same on every retry, so duplicates can be dropped
    X-OIX-Signature: t=1741944413,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

    {"data":{...},"delivery":1234,"event":"transfer.emergency","occurred_at":"2025-03-14T09:26:53Z","org":"RJ1"}

v1 is the hex HMAC-SHA256, keyed with the webhook's secret (its UTF-8 bytes, `whsec_` and all),
of "<t>.<body>": the decimal timestamp, a full stop, then the raw body bytes as received. A
receiver recomputes it, compares in constant time, and refuses a `t` more than a few minutes
from its own clock (a replayed delivery); `verify_signature` does exactly that. `t` is the time
of the attempt, so a retry carries a fresh one. This is the scheme GitHub- and Stripe-style
receivers already implement."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from enum import Enum
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Connection

from exchange.access import Requester
from exchange.audit import AuditAction, AuditEvent, AuditTrail
from exchange.errors import ExchangeError, UnknownOrganisation, UnknownWebhook
from exchange.jobs import Handler, PermanentFailure, RetryLater
from storage.jobs import Job, JobQueue, JobState
from storage.tables import Webhook, as_utc
from storage.webhooks import UnknownWebhookOrganisation, WebhookTable

DELIVERY_JOB = "webhook.delivery"  # the kind of job that delivers one event to one webhook
EVENT_HEADER = "X-OIX-Event"
DELIVERY_HEADER = "X-OIX-Delivery"
SIGNATURE_HEADER = "X-OIX-Signature"
SIGNATURE_TOLERANCE = timedelta(minutes=5)
SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2048
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_ATTEMPTS = 10  # with the default backoff: retried for about five hours
RESPONSE_EXCERPT_BYTES = 512  # of a refusing receiver's answer, for the delivery's last_error
USER_AGENT = "OIX-Webhooks/1"


class WebhookEvent(str, Enum):
    TRANSFER_EMERGENCY = "transfer.emergency"  # a clinical emergency transfer arrived: act now
    TRANSFER_DELIVERED = "transfer.delivered"  # a transfer was delivered to the organisation


class InvalidWebhook(ExchangeError):
    """A webhook that cannot be added as asked; the message says what to change."""




class InvalidSignature(ExchangeError):
    """A delivery whose X-OIX-Signature does not prove it came from the exchange, now."""


@dataclass(frozen=True)
class WebhookSubscription:
    """A webhook as listed: everything but its secret."""

    id: int
    org: str
    url: str
    events: tuple[WebhookEvent, ...]
    description: str
    created_by: str
    created_at: datetime
    disabled_at: datetime | None


@dataclass(frozen=True)
class NewWebhook:
    """A webhook just added, with the secret its deliveries are signed with: shown this once."""

    subscription: WebhookSubscription
    secret: str


@dataclass(frozen=True)
class WebhookDelivery:
    """One event on its way to one webhook (a job on the queue), as an API shows it."""

    id: int  # the X-OIX-Delivery header
    webhook_id: int
    event: str
    state: JobState
    attempts: int
    max_attempts: int
    next_attempt_at: datetime | None  # while queued
    last_error: str
    created_at: datetime
    finished_at: datetime | None


# -- signing ----------------------------------------------------------------------------------

def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The X-OIX-Signature header of `body` sent at `timestamp` (Unix seconds)."""
    return f"t={timestamp},v1={_digest(secret, body, timestamp)}"


def verify_signature(secret: str, header: str, body: bytes, now: datetime,
                     tolerance: timedelta = SIGNATURE_TOLERANCE) -> None:
    """Check an X-OIX-Signature header as a receiver should: some v1 value is the HMAC of this
    body with this secret, and its `t` is within `tolerance` of `now`. Raises InvalidSignature,
    saying why, if not. Several v1 values are allowed (a receiver may be told of two secrets)."""
    timestamps, candidates = [], []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            timestamps.append(value)
        elif name == "v1":
            candidates.append(value)
    if len(timestamps) != 1 or not timestamps[0].isdigit():
        raise InvalidSignature(f"the {SIGNATURE_HEADER} header has no single t=<unix time>")
    if not candidates:
        raise InvalidSignature(f"the {SIGNATURE_HEADER} header has no v1 signature")
    timestamp = int(timestamps[0])
    expected = _digest(secret, body, timestamp)
    if not any(hmac.compare_digest(expected.encode(), candidate.encode("utf-8", "replace"))
               for candidate in candidates):
        raise InvalidSignature("no v1 signature matches this body and secret: the body was altered or the "
                               "secret is not this webhook's")
    age = now.timestamp() - timestamp
    if abs(age) > tolerance.total_seconds():
        raise InvalidSignature(f"the signature's time is {abs(age):.0f} s {'old' if age > 0 else 'ahead'}, beyond the "
                               f"{tolerance.total_seconds():.0f} s tolerance: a replay, or a clock far off")


def _digest(secret: str, body: bytes, timestamp: int) -> str:
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()


# -- the service ------------------------------------------------------------------------------

def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Webhooks:
    """Subscriptions (add, list, remove: audited changes), `notify` to queue an event's
    deliveries, and `deliver`, the job handler that POSTs one (`handlers` for a JobRunner)."""

    def __init__(self, table: WebhookTable, queue: JobQueue, audit: AuditTrail, *,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                 ssl_context: ssl.SSLContext | None = None, proxy: str | None = None,
                 clock: Callable[[], datetime] = _utcnow):
        self.table = table
        self.queue = queue
        self.audit = audit
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.proxy = proxy
        self.clock = clock
        # Built once: a context per delivery would reload the CA bundle every time.
        self._ssl_context = ssl_context or httpx.create_ssl_context()

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return {DELIVERY_JOB: self.deliver}

    # -- subscriptions --------------------------------------------------------------------------

    def add(self, requester: Requester, org: str, url: str, events: Iterable[WebhookEvent | str],
            description: str = "") -> NewWebhook:
        url = checked_url(url)
        chosen = _checked_events(events)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        try:
            row = self.table.add(org, url, secret, tuple(event.value for event in chosen), self.clock(),
                                 description=description.strip()[:256], created_by=requester.principal.actor)
        except UnknownWebhookOrganisation:
            raise UnknownOrganisation(org) from None
        subscription = _subscription(row)
        self._changed(requester, org, f"webhook {row.id} added: {_receiver(url)} for "
                                      f"{', '.join(event.value for event in chosen)}")
        return NewWebhook(subscription, secret)

    def of_org(self, org: str, include_removed: bool = False) -> list[WebhookSubscription]:
        return [_subscription(row) for row in self.table.of_org(org, include_disabled=include_removed)]

    def remove(self, requester: Requester, org: str, webhook_id: int) -> None:
        """Disable the webhook: nothing more is queued for it, and its queued deliveries are given
        up when they come due."""
        if not self.table.disable(org, webhook_id, self.clock()):
            raise UnknownWebhook(org, webhook_id)
        self._changed(requester, org, f"webhook {webhook_id} removed")

    def _changed(self, requester: Requester, org: str, detail: str) -> None:
        # Where events about the organisation go is security configuration (PS3.15 A.5.3.11).
        self.audit.record(AuditEvent.for_request(requester, AuditAction.SECURITY_CONFIGURATION_CHANGED, org=org,
                                                 detail=detail))

    # -- events ---------------------------------------------------------------------------------

    def notify(self, org: str, event: WebhookEvent | str, body: Mapping, connection: Connection | None = None
               ) -> list[int]:
        """Queue one delivery of `event` (its `data` is `body`, JSON: say what happened and where
        to look, never patient details) to each of `org`'s webhooks subscribed to it. Returns the
        delivery ids. With `connection`, they commit with the caller's change or not at all."""
        event = WebhookEvent(event)
        if connection is not None:
            return self._enqueue(org, event, body, connection)
        # Most organisations have no webhooks: a read finds that without the write lock.
        if not any(event.value in row.events.split() for row in self.table.of_org(org)):
            return []
        with self.queue.database.write() as opened:
            return self._enqueue(org, event, body, opened)

    def _enqueue(self, org: str, event: WebhookEvent, body: Mapping, connection: Connection) -> list[int]:
        now = self.clock()
        return [self.queue.enqueue(DELIVERY_JOB, org, {"webhook": row.id, "event": event.value,
                                                       "occurred_at": _timestamp(now), "data": dict(body)},
                                   max_attempts=self.max_attempts, connection=connection, now=now)
                for row in self.table.of_org(org, connection=connection) if event.value in row.events.split()]

    def deliveries(self, org: str, limit: int = 100, before: int | None = None) -> list[WebhookDelivery]:
        """`org`'s webhook deliveries, newest first; `before` continues after a page's last id."""
        return [_delivery(job) for job in self.queue.of_org(org, kinds=[DELIVERY_JOB], limit=limit, before=before)]

    # -- delivery (the job handler) -------------------------------------------------------------

    def deliver(self, job: Job) -> None:
        """POST one event. Returns when the receiver answered 2xx; raises RetryLater for what may
        pass (no answer in time, no connection, 408, 429, 5xx) and PermanentFailure for what
        will not (another 4xx, a redirect, a webhook removed)."""
        webhook = self.table.get(job.payload["webhook"])
        if webhook is None or webhook.org != job.org or webhook.disabled_at is not None:
            raise PermanentFailure(f"webhook {job.payload['webhook']} was removed before this delivery was made")
        body = _body(job)
        receiver = _receiver(webhook.url)
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   EVENT_HEADER: job.payload["event"], DELIVERY_HEADER: str(job.id),
                   SIGNATURE_HEADER: signature(webhook.secret, body, int(self.clock().timestamp()))}
        try:
            with httpx.Client(timeout=self.timeout, follow_redirects=False, verify=self._ssl_context,
                              proxy=self.proxy, trust_env=False) as client, \
                    client.stream("POST", webhook.url, content=body, headers=headers) as response:
                if response.is_success:
                    return
                excerpt = _excerpt(response)
        except httpx.TimeoutException as exc:
            raise RetryLater(f"{receiver} did not answer within {self.timeout:g} s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise RetryLater(f"could not reach {receiver}: {type(exc).__name__}: {exc}") from None
        _refused(receiver, response, excerpt, self.clock())


# -- the receiver's answer --------------------------------------------------------------------

RETRIED_STATUSES = frozenset({408, 429})  # and every 5xx: what may pass if asked again later


def _refused(receiver: str, response: httpx.Response, excerpt: str, now: datetime) -> None:
    """Raise what a non-2xx answer means for the delivery."""
    status = f"{response.status_code} {response.reason_phrase}".strip()
    said = f": {excerpt}" if excerpt else ""
    if response.status_code in RETRIED_STATUSES or response.status_code >= 500:
        raise RetryLater(f"{receiver} answered {status}{said}", _retry_after(response.headers.get("Retry-After"), now))
    if 300 <= response.status_code < 400:
        location = response.headers.get("Location", "")[:256]
        raise PermanentFailure(f"{receiver} answered {status} to {location or 'somewhere else'}; redirects are "
                               f"not followed: change the webhook's URL")
    raise PermanentFailure(f"{receiver} answered {status}{said}; of the refusals only 408, 429 and 5xx are "
                           f"retried")


def _retry_after(value: str | None, now: datetime) -> timedelta | None:
    """RFC 9110 10.2.3 Retry-After: delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=min(int(value), 10 ** 7))
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(moment - now, timedelta(0))


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")


def _excerpt(response: httpx.Response) -> str:
    """The start of the answer's body, on one line: read no more of it than that."""
    taken = b""
    for chunk in response.iter_bytes():
        taken += chunk
        if len(taken) >= RESPONSE_EXCERPT_BYTES:
            break
    return _UNPRINTABLE.sub(" ", taken[:RESPONSE_EXCERPT_BYTES].decode("utf-8", "replace")).strip()


# -- checks and conversions -------------------------------------------------------------------

def checked_url(url: str) -> str:
    """A URL a webhook may POST to: absolute http(s) with a host, no credentials, no fragment."""
    url = url.strip()
    if not url:
        raise InvalidWebhook("a webhook needs a URL, such as https://pacs.example.nhs.uk/oix-events")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhook(f"the webhook URL is longer than {MAX_URL_LENGTH} characters")
    if any(character.isspace() or ord(character) < 0x20 or ord(character) == 0x7f for character in url):
        raise InvalidWebhook("the webhook URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        if parts.port == 0:  # reading the port also checks it: one out of range raises
            raise ValueError("port 0")
        httpx.URL(url)
    except ValueError as exc:  # httpx.InvalidURL is one
        raise InvalidWebhook(f"the webhook URL cannot be parsed: {exc}") from None
    if parts.scheme.lower() not in ("https", "http"):
        raise InvalidWebhook(f"a webhook URL starts with https:// (or http://), not "
                             f"'{parts.scheme + ':' if parts.scheme else 'no scheme'}'")
    if "@" in parts.netloc:
        # Not echoed: the point is not to keep or show a password.
        raise InvalidWebhook("the webhook URL carries credentials (user:password@host): remove them; the receiver "
                             f"proves a delivery is genuine by its {SIGNATURE_HEADER} header instead")
    if not parts.hostname:
        raise InvalidWebhook("the webhook URL has no host")
    if parts.fragment or url.endswith("#"):
        raise InvalidWebhook("the webhook URL has a #fragment, which is never sent: remove it")
    return url


def _checked_events(events: Iterable[WebhookEvent | str]) -> tuple[WebhookEvent, ...]:
    chosen: list[WebhookEvent] = []
    for name in [events] if isinstance(events, str) else events:
        try:
            event = WebhookEvent(name)
        except ValueError:
            raise InvalidWebhook(f"'{name}' is not a webhook event: choose from "
                                 f"{', '.join(event.value for event in WebhookEvent)}") from None
        if event not in chosen:
            chosen.append(event)
    if not chosen:
        raise InvalidWebhook(f"a webhook needs at least one event: "
                             f"{', '.join(event.value for event in WebhookEvent)}")
    return tuple(chosen)


def _receiver(url: str) -> str:
    """How messages name a receiver: scheme, host and port only (a path may hold a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _body(job: Job) -> bytes:
    """The JSON a delivery POSTs: the same bytes on every attempt."""
    envelope = {"delivery": job.id, "event": job.payload["event"], "org": job.org,
                "occurred_at": job.payload["occurred_at"], "data": job.payload["data"]}
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _subscription(row: Webhook) -> WebhookSubscription:
    return WebhookSubscription(
        id=row.id, org=row.org, url=row.url, events=tuple(WebhookEvent(name) for name in row.events.split()),
        description=row.description, created_by=row.created_by, created_at=as_utc(row.created_at),
        disabled_at=as_utc(row.disabled_at) if row.disabled_at is not None else None)


def _delivery(job: Job) -> WebhookDelivery:
    return WebhookDelivery(
        id=job.id, webhook_id=job.payload["webhook"], event=job.payload["event"], state=job.state,
        attempts=job.attempts, max_attempts=job.max_attempts,
        next_attempt_at=job.run_after if job.state is JobState.QUEUED else None, last_error=job.last_error,
        created_at=job.created_at, finished_at=job.finished_at)
