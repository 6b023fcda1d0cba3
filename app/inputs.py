"""What a POST /items body must hold, checked by the same serializer on the Django path (app/views.py) and on
the write path (app/write_path.py), so that both accept exactly the same bodies."""

from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
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


# What the schema says of the text fields, as the serializer judges them: no NUL (DRF refuses it in any CharField)
# and, for the name, something left once leading and trailing whitespace is trimmed.
@extend_schema_field({"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^\\x00]*[^\\s\\x00][^\\x00]*$"})
class NameField(StrictCharField):
    pass


# Non-empty here: drf-spectacular adds "or empty" for a blank-allowing field with a pattern (oneOf: one must match).
@extend_schema_field({"type": "string", "maxLength": 2000, "default": "", "pattern": "^[^\\x00]+$"})
class DescriptionField(StrictCharField):
    pass


@extend_schema_serializer(component_name="Input")  # its name in the OpenAPI schema since the first release
class ItemInput(serializers.Serializer):
    name = NameField(min_length=1, max_length=200)
    description = DescriptionField(max_length=2000, required=False, allow_blank=True, default="")
