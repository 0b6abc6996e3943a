"""A Polygon-compatible sandbox: a deterministic synthetic market served over loopback HTTP.

Used by the tests, by the offline main job and by the dev UI when no API key is set. Every
response says `X-Sandbox: synthetic`; every reference name ends with " (synthetic sandbox data)".
"""

from market_pipeline.sandbox.corporate_actions import as_traded_bars
from market_pipeline.sandbox.market import synthetic_bars
from market_pipeline.sandbox.server import SANDBOX_API_KEY, SandboxServer, serve_forever

__all__ = ["SandboxServer", "SANDBOX_API_KEY", "as_traded_bars", "synthetic_bars", "serve_forever"]
