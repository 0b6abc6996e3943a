"""Processes and ports on this machine (Linux /proc): what the dev stack checks before it starts and
kills after it stops."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _processes() -> list[tuple[int, str, int, int]]:
    """(pid, state, ppid, pgid) of every process, from /proc (Linux); [] elsewhere."""
    out = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        out.append((int(entry.name), fields[0], int(fields[1]), int(fields[2])))
    return out


def _children_map() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for pid, _, ppid, _ in _processes():
        tree.setdefault(ppid, []).append(pid)
    return tree


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of the process group `pgid`."""
    return [pid for pid, state, _, group in _processes() if group == pgid and state != "Z"]


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (children, grandchildren, ...)."""
    tree, out, todo = _children_map(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"  # a zombie is gone for our purposes


def _signal(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if _alive(p)]
    return alive


def caught_signals(pid: int) -> set[int] | None:
    """The signals process `pid` has handlers for (/proc/PID/status `SigCgt`), None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            mask = int(line.split()[1], 16)
            return {bit + 1 for bit in range(64) if mask >> bit & 1}
    return None


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
