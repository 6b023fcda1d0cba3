"""Top-level routes: the items API, health, metrics, the OpenAPI schema and its UI."""

from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, re_path
from django.views.decorators.http import require_safe
from django_prometheus.exports import ExportToDjangoView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from project.health import healthz, readyz


class SchemaView(SpectacularAPIView):
    # Read-only: DRF's OPTIONS metadata is nothing a client of the schema needs.
    http_method_names = ["get", "head"]


class DocsView(SpectacularSwaggerView):
    # DRF's OPTIONS answer would render metadata through the UI's HTML renderer, which has no template: a 500.
    http_method_names = ["get", "head"]


urlpatterns = [
    re_path("", include("app.urls")),
    re_path(r"^healthz/?$", healthz, name="healthz"),
    re_path(r"^readyz/?$", readyz, name="readyz"),
    # Nginx serves /metrics to internal addresses only (deploy/nginx).
    re_path(r"^metrics/?$", require_safe(ExportToDjangoView), name="metrics"),
    re_path(r"^schema/?$", SchemaView.as_view(), name="schema"),
    re_path(r"^docs/?$", DocsView.as_view(url_name="schema"), name="docs"),
    # The docs UI's few assets, from the installed packages: low traffic, so Django serves them itself.
    re_path(r"^static/(?P<path>.+)$", require_safe(serve_static), {"insecure": True}),
]

handler400 = "project.errors.handler400"
handler403 = "project.errors.handler403"
handler404 = "project.errors.handler404"
handler500 = "project.errors.handler500"
