"""Every route of the portal (server-rendered pages for people, `/` and below), in one list
that the app mounts: sign-in, the portal's own static files, and each page's module."""

from portal.admin import ROUTES as ADMIN_ROUTES
from portal.audit_page import ROUTES as AUDIT_ROUTES
from portal.home import ROUTES as HOME_ROUTES
from portal.inbox import ROUTES as INBOX_ROUTES
from portal.patient_access import ROUTES as PATIENT_ACCESS_ROUTES
from portal.send import ROUTES as SEND_ROUTES
from portal.sent import ROUTES as SENT_ROUTES
from portal.signin import ROUTES as SIGN_IN_ROUTES
from portal.static import ROUTES as STATIC_ROUTES
from portal.transfer_page import ROUTES as TRANSFER_ROUTES
from portal.viewer import ROUTES as VIEWER_ROUTES

ROUTES = [
    *AUDIT_ROUTES,
    *ADMIN_ROUTES,
    *PATIENT_ACCESS_ROUTES,
    *SIGN_IN_ROUTES,
    *STATIC_ROUTES,
    *VIEWER_ROUTES,
    *HOME_ROUTES,
    *INBOX_ROUTES,
    *TRANSFER_ROUTES,
    *SEND_ROUTES,
    *SENT_ROUTES,
]
