"""The items app: model, services (writes), selectors (reads), API views and the Celery task."""
