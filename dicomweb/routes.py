"""The DICOMweb service root of each organisation: `/dicomweb/{org}/…` (PS3.18 10)."""

from starlette.routing import Mount

from dicomweb import qido, rendered, stow, wado


def service_root_mount() -> Mount:
    return Mount("/dicomweb/{org}", routes=[*stow.ROUTES, *qido.ROUTES, *wado.ROUTES, *rendered.ROUTES])
