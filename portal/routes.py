"""Every route of the portal (server-rendered pages for people, `/` and below), in one list
that the app mounts: sign-in, the portal's own static files, and each page's module."""

from portal.signin import ROUTES as SIGN_IN_ROUTES
from portal.static import ROUTES as STATIC_ROUTES

ROUTES = [
    *SIGN_IN_ROUTES,
    *STATIC_ROUTES,
]
