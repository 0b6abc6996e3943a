"""`market-pipeline sandbox --port N` serves in the foreground until stopped."""

import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from market_pipeline.sandbox import SANDBOX_API_KEY
from market_pipeline_tests.waiting import scaled


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_sandbox_command_serves_until_terminated():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "market_pipeline.cli.main", "sandbox", "--port", str(port), "--latency-ms", "150"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/v2/aggs/ticker/AAPL/range/1/day/2024-01-02/2024-01-05"
        deadline = time.monotonic() + scaled(30)
        while True:
            try:
                # a first answer can take long on a busy machine: wait for it, not a fixed 2 s
                response = requests.get(url, headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"}, timeout=scaled(30))
                break
            except requests.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, "sandbox did not start"
                time.sleep(0.2)
        assert response.status_code == 200 and response.json()["resultsCount"] == 4
        assert response.headers["X-Sandbox"] == "synthetic"
        assert requests.get(url, timeout=scaled(30)).status_code == 401
        began = time.monotonic()
        requests.get(url, headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"}, timeout=scaled(30))
        assert time.monotonic() - began >= 0.15  # every answer is slowed to the real API's latency
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=scaled(30))
    assert process.returncode == 0
    assert str(port) in output and SANDBOX_API_KEY in output  # it tells the user the URL and its key
