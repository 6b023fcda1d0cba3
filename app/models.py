"""The Item row, written only by the worker (app.services.items_store)."""

from django.db import models


class Item(models.Model):
    # A UUIDv7 assigned at POST time (app/ids.py). Its leading 48 bits are the acceptance time in ms, so
    # ORDER BY id DESC is newest first and the primary-key index serves keyset pagination with no sort.
    id = models.UUIDField(primary_key=True, editable=False)
    name = models.CharField(max_length=200)
    description = models.CharField(max_length=2000, blank=True, default="")
    # Invariant: equals the timestamp encoded in id (both come from one clock reading in item_accept).
    created_at = models.DateTimeField()

    class Meta:
        db_table = "items"

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"
