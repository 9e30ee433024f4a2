"""Which workload served a reply, read from what Bookinfo itself reports."""

import json
import re

# productpage renders the reviews pod name after this label.
_PRODUCTPAGE = re.compile(r"Reviews served by:\s*(?:<[^>]*>\s*)*([A-Za-z0-9.-]+)")


def served_by(body: str) -> str | None:
    """The pod that served a reviews reply (JSON) or a productpage page (HTML)."""
    text = body.lstrip()
    if text.startswith("{"):
        try:
            value = json.loads(text).get("podname")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None
    match = _PRODUCTPAGE.search(body)
    return match.group(1) if match else None


def version_of(pod: str | None) -> str | None:
    """The workload version in a Bookinfo pod name: reviews-v2-6c5b... -> v2."""
    if not pod:
        return None
    match = re.search(r"-(v\d+)(?:-|$)", pod)
    return match.group(1) if match else None
