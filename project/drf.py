"""DRF plumbing: content negotiation that honours `q=0`, and a JSON parser that reads UTF-8 only."""

from rest_framework.exceptions import UnsupportedMediaType
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import JSONParser as DRFJSONParser
from rest_framework.request import Request


def _refused(media_range: str) -> bool:
    for param in media_range.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value) <= 0
            except ValueError:
                return False
    return False


class ContentNegotiation(DefaultContentNegotiation):
    """`q=0` means "not this type", which DRF's own reads as "this type"."""

    def get_accept_list(self, request: Request) -> list[str]:
        # Nothing left (every range refused) selects no renderer: DRF answers 406, as app.http.accepts_json does.
        return [media_range for media_range in super().get_accept_list(request) if not _refused(media_range)]


class JSONParser(DRFJSONParser):
    """JSON is UTF-8 (RFC 8259 defines no charset parameter). DRF decodes with whatever charset the client names,
    so `charset=latin-1` stored mojibake, and older DRF releases even decompressed `charset=bz2`: any other
    charset is refused (415)."""

    def parse(self, stream, media_type=None, parser_context=None):
        for param in (media_type or "").split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
                raise UnsupportedMediaType(media_type)
        return super().parse(stream, media_type, parser_context)
