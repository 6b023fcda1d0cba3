"""App config for the items app."""

from django.apps import AppConfig


class ItemsConfig(AppConfig):
    name = "app"
    label = "items"
    verbose_name = "Items"

    def ready(self) -> None:
        import project.checks  # noqa: F401  (registers the production checks)
