"""Reading Polygon's error answers: the text of an error body, a `Retry-After` header."""

from __future__ import annotations

import json

import requests


def _error_text(response: requests.Response, content: bytes) -> str:
    try:
        body = json.loads(content)
    except ValueError:
        return (response.reason or "no JSON body").strip()
    if isinstance(body, dict):
        status = body.get("status")
        text = body.get("error") or body.get("message") or ""
        return f"{status}: {text}" if status and text else str(text or status or body)
    return str(body)[:200]


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None
