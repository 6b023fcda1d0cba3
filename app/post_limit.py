"""The per-client POST rate limit (django-ratelimit, counted in the state cache), for the Django path and the
write path alike: one counter per client whichever path serves its POST."""

from django.conf import settings
from django.http import HttpRequest
from django_ratelimit.core import get_usage

from project.errors import RateLimited
from project.net import client_ip, is_allowlisted


def _post_rate(group: str, request: HttpRequest) -> str | None:
    """django-ratelimit's rate for POST; None (no limit) for allow-listed clients such as load generators."""
    return None if is_allowlisted(client_ip(request)) else settings.RATELIMIT_POST_RATE


def is_limited(request: HttpRequest) -> bool:
    """Whether the POST limit applies to this request's client at all (False: no counter to touch)."""
    return bool(settings.RATELIMIT_ENABLE) and _post_rate("items.post", request) is not None


def check_post_rate(request: HttpRequest) -> None:
    """Count this POST; RateLimited once the client's window is used up.

    django-ratelimit counts in fixed windows; its usage says when this client's window ends, which is the true
    Retry-After (the decorator's Ratelimited carries none)."""
    usage = get_usage(request, group="items.post", key="ip", rate=_post_rate, method="POST", increment=True)
    if usage is not None and usage["should_limit"]:
        raise RateLimited(retry_after_s=max(1, usage["time_left"]))
