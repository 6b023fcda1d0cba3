"""Top-level routes: the items API, health, metrics, the OpenAPI schema and its UI."""

from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, re_path
from django_prometheus.exports import ExportToDjangoView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from project.health import healthz, readyz

urlpatterns = [
    re_path("", include("app.urls")),
    re_path(r"^healthz/?$", healthz, name="healthz"),
    re_path(r"^readyz/?$", readyz, name="readyz"),
    # Nginx serves /metrics to internal addresses only (deploy/nginx).
    re_path(r"^metrics/?$", ExportToDjangoView, name="metrics"),
    re_path(r"^schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    # The docs UI's few assets, from the installed packages: low traffic, so Django serves them itself.
    re_path(r"^static/(?P<path>.+)$", serve_static, {"insecure": True}),
]

handler400 = "project.errors.handler400"
handler403 = "project.errors.handler403"
handler404 = "project.errors.handler404"
handler500 = "project.errors.handler500"
