"""Following Polygon's `next_url` cursor pagination safely. Pure.

A history is complete only when the last page has no `next_url`. A `next_url` that repeats (a page
pointing at itself, or a cursor cycle), that leaves the base URL's origin, or a chain longer than
`max_pages` is a failure with a reason, never a silently shortened history.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from market_pipeline.polygon.origin import describe_host, same_origin

MAX_PAGES = 1000


class PaginationError(Exception):
    """The pages could not be read to their end; the message says why."""


def strip_key(url: str) -> str:
    """Drop an apiKey query parameter a server may have echoed into a next_url."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "apikey"]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _canonical(url: str) -> str:
    """A URL compared for repeats: scheme and host lower-cased, query parameters sorted."""
    parts = urlsplit(url)
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, query, ""))


class PageGuard:
    """Tracks the pages of one paginated fetch; `follow(next_url)` returns the next URL to request
    or raises PaginationError."""

    def __init__(self, first_url: str, base_url: str, *, what: str, max_pages: int = MAX_PAGES):
        self.base_url = base_url
        self.what = what
        self.max_pages = max_pages
        self.pages = 1
        self._seen = {_canonical(first_url)}

    def follow(self, next_url: str) -> str:
        if not isinstance(next_url, str) or not next_url.strip():
            raise PaginationError(f"{self.what}: pagination did not end: Polygon sent an unusable next_url")
        url = strip_key(next_url.strip())
        if not same_origin(url, self.base_url):
            raise PaginationError(
                f"{self.what}: pagination did not end: refused a next_url on {describe_host(url)}, "
                f"which is not the configured API origin {describe_host(self.base_url)} (the key is sent nowhere else)"
            )
        key = _canonical(url)
        if key in self._seen:
            raise PaginationError(
                f"{self.what}: pagination did not end: Polygon repeated a next_url after {self.pages} page(s) "
                "(a page loop); nothing from this fetch was stored"
            )
        if self.pages >= self.max_pages:
            raise PaginationError(
                f"{self.what}: pagination did not end: more than {self.max_pages} pages; nothing from this fetch was stored"
            )
        self._seen.add(key)
        self.pages += 1
        return url
