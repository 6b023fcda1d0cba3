"""drf-spectacular hooks."""


def drop_optional_slash(result: dict, generator, request, public) -> dict:
    """Routes accept an optional trailing slash (`/items/?`); document the canonical form `/items`."""
    result["paths"] = {path.rstrip("/") or "/": item for path, item in result["paths"].items()}
    return result
