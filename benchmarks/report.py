"""The results of a benchmark run and their rendering as BENCHMARKS.md."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

MET, MISSED, NOT_MEASURED = "met", "**missed**", "not measured"


@dataclass
class Section:
    key: str
    title: str
    intro: str = ""
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    align: str = ""  # one letter per column, l or r (default: the first left, the others right)
    data: dict = field(default_factory=dict)  # raw numbers, written to the JSON companion file

    def row(self, *cells) -> None:
        self.rows.append([str(c) for c in cells])

    def markdown(self, provenance: str = "") -> str:
        out = [f"## {self.title}", ""]
        if provenance:
            out += [provenance, ""]
        if self.intro:
            out += [self.intro, ""]
        if self.headers:
            out.append("| " + " | ".join(self.headers) + " |")
            align = self.align or "l" + "r" * (len(self.headers) - 1)
            out.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
            for r in self.rows:
                out.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
            out.append("")
        for note in self.notes:
            out.append(note if note.startswith(("-", "*", "```", "    ")) else f"- {note}")
        if self.notes:
            out.append("")
        return "\n".join(out)


@dataclass
class Target:
    name: str
    goal: str
    measured: str = "n/a"
    status: str = NOT_MEASURED


@dataclass
class Results:
    machine: dict
    parameters: dict
    command: str
    sections: list[Section] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    def section(self, key: str) -> Section | None:
        return next((s for s in self.sections if s.key == key), None)

    def target(self, name: str, goal: str) -> Target:
        found = next((t for t in self.targets if t.name == name), None)
        if found is None:
            found = Target(name, goal)
            self.targets.append(found)
        return found

    @property
    def provenance(self) -> str:
        m = self.machine
        return (
            f"_Measured {m['date']} at commit {m['commit']} on {m['cpu']} ({m['cores']} cores, {m['memory']}; "
            f"load {m['load average at start (1/5/15 min)']}): `{self.command}`._"
        )

    @property
    def measured_on(self) -> str:
        m = self.machine
        return f"{m['date'][:10]}, {m['commit'][:7]}, {m['cpu']}"

    def markdown(self, existing: str | None = None) -> str:
        """BENCHMARKS.md: `existing` (or an empty report) with this run's scenarios and targets put in
        place of their previous measurements, every other scenario kept, and one history row added."""
        return merge(existing if existing and TARGETS_HEADING in existing else TEMPLATE, self)

    def write(self, path: Path, json_path: Path | None = None) -> None:
        path.write_text(self.markdown(path.read_text() if path.exists() else None))
        if json_path is None:
            return
        payload = {
            "machine": self.machine,
            "parameters": self.parameters,
            "command": self.command,
            "elapsed_seconds": self.elapsed_seconds,
            "targets": [asdict(t) for t in self.targets],
            "sections": {s.key: s.data for s in self.sections},
        }
        json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


# ---- BENCHMARKS.md: each scenario's latest measurement, earlier runs as a history table ---------------
TARGETS_HEADING = "## Targets"
HISTORY_HEADING = "## History"
TARGETS_HEADER = ["| Target | Goal | Latest | Status | Measured |", "|---|---|---|---|---|"]
HISTORY_TARGETS = ("Main job vs floor", "Main job at 150 ms latency", "UI-path backfill at 150 ms latency", "Daily refresh at scale")
TEMPLATE = f"""# Benchmarks

`make bench` (`python -m benchmarks.run_all`, never part of `make test`) measures the pipeline side
by side with the machine's own floor; [docs/development.md](docs/development.md#benchmarks) lists its
scenarios and options. The Polygon sandbox runs in its own process on loopback (no rate limit, no
faults unless a scenario asks for them), already holding the symbols' series in memory, so the
timings are the pipeline's, not the network's. Timed cells read `median (min–max)` when repeated.

Each scenario below is its latest measurement, with the date, the commit and the machine it was
measured on; a run of some scenarios replaces those and keeps the others. Earlier measurements are
summed up in [History](#history).

{TARGETS_HEADING}

{TARGETS_HEADER[0]}
{TARGETS_HEADER[1]}

{HISTORY_HEADING}

| Date | Commit | Machine | Main job / floor | Main job / 8-in-flight floor, 150 ms | UI path / 8-in-flight floor, 150 ms | Daily refresh, 10,000 stocks |
|---|---|---|---:|---:|---:|---:|
"""


def _blocks(text: str) -> tuple[str, list[list[str]]]:
    """The text before the first `## ` heading, and each `## ` block as [heading, body lines...]."""
    lines = text.rstrip("\n").split("\n")
    preamble, blocks = [], []
    for line in lines:
        if line.startswith("## "):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
        else:
            preamble.append(line)
    return "\n".join(preamble), blocks


def _number(heading: str) -> str | None:
    first = heading[3:].split(" ", 1)[0]
    return first if first[:-1].isdigit() and first.endswith(".") else None


def _table_rows(block: list[str]) -> tuple[int, int]:
    """Where the block's first table starts and ends (line indexes; ends past its last row)."""
    start = next((i for i, line in enumerate(block) if line.startswith("|")), len(block))
    end = start
    while end < len(block) and block[end].startswith("|"):
        end += 1
    return start, end


def merge(existing: str, results: "Results") -> str:
    preamble, blocks = _blocks(existing)
    headings = [b[0] for b in blocks]
    # the targets this run measured replace their rows; the others keep theirs
    if TARGETS_HEADING in headings:
        block = blocks[headings.index(TARGETS_HEADING)]
        start, end = _table_rows(block)
        rows = block[start + 2 : end]
        by_name = {row.split("|")[1].strip(): i for i, row in enumerate(rows)}
        for t in results.targets:
            if t.status == NOT_MEASURED:
                continue
            row = f"| {t.name} | {t.goal} | {t.measured} | {t.status} | {results.measured_on} |"
            if t.name in by_name:
                rows[by_name[t.name]] = row
            else:
                by_name[t.name] = len(rows)
                rows.append(row)
        table = TARGETS_HEADER + rows
        blocks[headings.index(TARGETS_HEADING)] = block[:start] + (table if start < len(block) else ["", *table]) + block[end:]
    # each scenario run replaces its previous measurement (same heading), or joins its number's others
    for section in results.sections:
        block = section.markdown(results.provenance).rstrip("\n").split("\n") + [""]
        headings = [b[0] for b in blocks]
        if block[0] in headings:
            blocks[headings.index(block[0])] = block
            continue
        number = _number(block[0])
        same = [i for i, h in enumerate(headings) if number and _number(h) == number]
        numbered = [i for i, h in enumerate(headings) if _number(h) and number and int(_number(h)[:-1]) < int(number[:-1])]
        at = same[-1] + 1 if same else (numbered[-1] + 1 if numbered else (headings.index(TARGETS_HEADING) + 1 if TARGETS_HEADING in headings else len(blocks)))
        blocks.insert(at, block)
    # one history row for a run that measured a headline number
    headings = [b[0] for b in blocks]
    measured = {t.name: t.measured for t in results.targets if t.status != NOT_MEASURED}
    if HISTORY_HEADING in headings and any(name in measured for name in HISTORY_TARGETS):
        block = blocks[headings.index(HISTORY_HEADING)]
        start, end = _table_rows(block)
        m = results.machine
        cells = [m["date"][:10], m["commit"][:7], m["cpu"], *(measured.get(name, "") for name in HISTORY_TARGETS)]
        block.insert(end, "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    out = [preamble.rstrip("\n"), ""]
    for block in blocks:
        out.append("\n".join(block).rstrip("\n"))
        out.append("")
    return "\n".join(out)
