"""What a POST /items body must hold, checked by the same serializer on the Django path (app/views.py) and on
the write path (app/write_path.py), so that both accept exactly the same bodies."""

from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of quietly turning them into text, and text that
    cannot be stored as UTF-8 (lone surrogates from \\ud800-style JSON escapes)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            self.fail("invalid_unicode")
        return super().to_internal_value(data)

    default_error_messages = {
        "invalid": "Must be a string.",
        "invalid_unicode": "Must be valid Unicode text (no lone surrogates).",
    }


@extend_schema_serializer(component_name="Input")  # its name in the OpenAPI schema since the first release
class ItemInput(serializers.Serializer):
    name = StrictCharField(min_length=1, max_length=200)
    description = StrictCharField(max_length=2000, required=False, allow_blank=True, default="")
