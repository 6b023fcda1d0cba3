"""What the app's ASGI paths (app/fast_path.py, app/write_path.py) need to answer as the Django path would: the
Host check of ALLOWED_HOSTS, the scheme behind a TLS terminator, and the headers Django's security middleware
adds to every answer."""

from django.conf import settings
from django.http.request import split_domain_port, validate_host


def header(scope, name: bytes) -> bytes | None:
    """The value of the request header `name` (lower case); None when absent."""
    return next((v for n, v in scope["headers"] if n == name), None)


def host_allowed(scope) -> bool:
    value = header(scope, b"host")
    if value is None:
        return False
    domain, _ = split_domain_port(value.decode("latin-1"))
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


def scheme_allowed(scope) -> bool:
    """False for plain HTTP where BEHIND_TLS makes Django redirect it: Django answers that one."""
    return not settings.BEHIND_TLS or header(scope, b"x-forwarded-proto") == b"https"


def security_headers() -> list[tuple[bytes, bytes]]:
    """What SecurityMiddleware and XFrameOptionsMiddleware add on the Django path."""
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", settings.SECURE_REFERRER_POLICY.encode()),
        (b"cross-origin-opener-policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode()),
        (b"x-frame-options", settings.X_FRAME_OPTIONS.encode()),
    ]
    if settings.BEHIND_TLS:
        headers.append((b"strict-transport-security", _hsts().encode()))
    return headers


def _hsts() -> str:
    """The Strict-Transport-Security value SecurityMiddleware sends, from the same settings."""
    value = f"max-age={settings.SECURE_HSTS_SECONDS}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        value += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        value += "; preload"
    return value
