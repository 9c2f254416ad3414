"""Response headers that make browsers safer with what we serve: no MIME sniffing, no framing,
no referrers carrying study UIDs to other sites, a content policy for pages, and HSTS when
served over TLS (RFC 6797)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
ALWAYS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
PAGE_POLICY = (b"content-security-policy",
               b"default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
               b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, tls: bool):
        self.app = app
        self.headers = ALWAYS + ([HSTS] if tls else [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + self.headers
                if any(name == b"content-type" and value.startswith(b"text/html") for name, value in headers):
                    headers.append(PAGE_POLICY)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
