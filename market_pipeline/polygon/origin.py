"""Where the API key may go: only to the configured base URL's exact origin. Pure functions.

An origin is (scheme, host, port) with the port normalised (https: 443, http: 80) and the host
lower-cased. A `next_url` from Polygon must stay on the base URL's origin: another host (even a
look-alike such as `evilpolygon.io`), another port or a downgrade from https to http is refused.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit

DEFAULT_PORTS = {"https": 443, "http": 80}


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        default = DEFAULT_PORTS.get(self.scheme)
        return f"{self.scheme}://{self.host}" + ("" if self.port == default else f":{self.port}")


def origin_of(url: str) -> Origin | None:
    """The origin of an absolute http(s) URL, or None when it has none (relative, other scheme, bad port)."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:  # a port that is not a number or out of range
        return None
    if scheme not in DEFAULT_PORTS or not host:
        return None
    return Origin(scheme, host, port if port is not None else DEFAULT_PORTS[scheme])


def same_origin(url: str, base_url: str) -> bool:
    """Whether `url` is on exactly the scheme, host and port of `base_url`."""
    origin = origin_of(url)
    return origin is not None and origin == origin_of(base_url)


def describe_host(url: str) -> str:
    """The scheme, host and port of a URL for an error message (never its path or query)."""
    origin = origin_of(url)
    if origin is not None:
        return str(origin)
    try:
        parts = urlsplit(url)
        return f"{parts.scheme or '?'}://{parts.hostname or '?'}"
    except ValueError:
        return "an unparsable URL"
