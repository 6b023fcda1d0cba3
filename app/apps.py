"""App config for the items app."""

from django.apps import AppConfig


class ItemsConfig(AppConfig):
    name = "app"
    label = "items"
    verbose_name = "Items"

    def ready(self) -> None:
        import app.tasks  # noqa: F401  (registers items.store: publish and the consumer look it up by name)
        import project.checks  # noqa: F401  (registers the system checks)
        from app.messaging.consumer import ItemsBatchConsumer
        from project.celery import app as celery_app

        # Before a worker builds its consumer: Celery's Django fixup runs django.setup() while the worker loads
        # its modules, ahead of the consumer blueprint. Web processes never start a consumer.
        celery_app.steps["consumer"].add(ItemsBatchConsumer)
