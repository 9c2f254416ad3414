"""Cross-origin access (the Fetch standard's CORS protocol) for the browser viewers an operator
names with `--cors-origin`, such as OHIF served from its own host: what they may send and read."""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

METHODS = ["GET", "POST", "PATCH", "DELETE", "OPTIONS"]
# Response headers a script may read beyond the CORS-safelisted ones (Content-Type is one, so
# a multipart boundary is readable already): the Warning of a partial or literal-only search
# (PS3.18 8.1.3, 10.6.3.3), why a bearer token was refused (RFC 6750 3: a viewer tells an
# expired token from a refused one and renews it), and the request id to quote in a support call.
EXPOSED_HEADERS = ["Content-Type", "Content-Length", "Warning", "WWW-Authenticate", "X-Request-Id"]
PREFLIGHT_MAX_AGE_SECONDS = 600


def cors_middleware(origins: tuple[str, ...]) -> Middleware:
    """Allow exactly `origins`. Any request header is allowed (a preflight's list is echoed, as
    `*` would not cover Authorization), so a viewer may send `Authorization: Bearer` and a quoted
    multipart Accept. No credentials mode: viewers send tokens, not the portal's cookies. A
    listed origin may also reach a server on a private network (Private Network Access)."""
    return Middleware(CORSMiddleware, allow_origins=list(origins), allow_methods=METHODS, allow_headers=["*"],
                      expose_headers=EXPOSED_HEADERS, allow_private_network=True,
                      max_age=PREFLIGHT_MAX_AGE_SECONDS)
