"""Reading Polygon's answers: a 200 answer's JSON body or what is wrong with it, the text of an
error body, a `Retry-After` header."""

from __future__ import annotations

import json

import requests

SUCCESS_STATUSES = frozenset({"OK", "DELAYED"})


def answer_body(content: bytes, path: str) -> tuple[dict | None, str | None, bool]:
    """A 200 answer's JSON body, or None with what is wrong with it, worded for the user, and whether
    sending the request again may help (a truncated body). Never raises: it also runs in the decoding
    process (`range_pages`)."""
    try:
        body = json.loads(content)
    except ValueError:
        return None, f"truncated or invalid JSON from {path}", True
    if not isinstance(body, dict):
        return None, f"unexpected payload from {path}", False
    if body.get("status") not in SUCCESS_STATUSES:
        return None, f"Polygon answered status {body.get('status')!r}: {body.get('error') or body.get('message') or ''}", False
    return body, None, False


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
