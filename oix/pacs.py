"""The PACS that auto-forwarding stores into: oix/stow_client.py's streaming STOW-RS client, its
answers put in the terms of exchange/forwarding.py (the InstanceStore seam)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import httpx

from exchange.forwarding import InstanceRefusal, OutgoingInstance, PacsRefused, PacsUnavailable, StoreOutcome
from oix.stow_client import ServerUnavailable, StoreRefused, store_instances

USER_AGENT = "OIX-Forwarding/1"
RETRIED_STATUSES = frozenset({408, 429})  # and every 5xx


class StowPacs:
    """One httpx client per worker thread (kept for its connections), closed by `close`."""

    def __init__(self, timeout: float, *, ssl_context: ssl.SSLContext | None = None, proxy: str | None = None):
        self.timeout = timeout
        self.proxy = proxy
        # Built once: a context per client would reload the CA bundle every time.
        self._ssl_context = ssl_context or httpx.create_ssl_context()
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()

    def store_instances(self, studies_url: str, instances: Sequence[OutgoingInstance],
                        headers: Mapping[str, str]) -> StoreOutcome:
        receiver = _receiver(studies_url)
        try:
            response = store_instances(self._client(), studies_url, instances,
                                       {"User-Agent": USER_AGENT, **headers})
        except httpx.TimeoutException as exc:
            raise PacsUnavailable(f"{receiver} did not answer within {self.timeout:g} s "
                                  f"({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise PacsUnavailable(f"could not reach {receiver}: {type(exc).__name__}: {exc}") from None
        except ServerUnavailable as exc:
            raise PacsUnavailable(f"{receiver} answered {exc}") from None
        except StoreRefused as exc:
            if exc.status in RETRIED_STATUSES:
                raise PacsUnavailable(f"{receiver} answered {exc.status}: {exc.message}") from None
            raise PacsRefused(f"{receiver} answered {exc.status}: {exc.message}") from None
        return StoreOutcome(stored=response.stored, refused={
            failure.sop_instance_uid: InstanceRefusal(failure.reason, failure.message)
            for failure in response.failed if failure.sop_instance_uid})

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None or client.is_closed:
            client = httpx.Client(timeout=self.timeout, follow_redirects=False, verify=self._ssl_context,
                                  proxy=self.proxy, trust_env=False)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client


def _receiver(url: str) -> str:
    """How messages name the PACS: scheme, host and port (a path may hold a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
