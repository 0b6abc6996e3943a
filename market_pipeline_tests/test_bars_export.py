"""`market-pipeline bars --csv FILE`: an existing file is never replaced without --force; a missing
folder, a folder as FILE and a folder that may not be written are one line, exit 2, nothing read or
written; the CSV appears whole or not at all (a temporary file beside FILE, renamed onto it)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess

import pandas as pd
import pytest

from market_pipeline.cli import bars as bars_command
from market_pipeline.cli.main import main
from market_pipeline.warehouse import BarStore, SymbolRegistry


@pytest.fixture
def stored(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    SymbolRegistry(url).add(["AAPL"], "stock", "2024-01-02")
    days = pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04"])
    frame = pd.DataFrame({
        "date": days, "open": [1.0, 2.0, 3.0], "high": [1.5, 2.5, 3.5], "low": [0.5, 1.5, 2.5],
        "close": [1.2, 2.2, 3.2], "volume": [100.0, 200.0, 300.0], "vwap": [1.1, 2.1, 3.1],
        "transactions": pd.array([10, 20, 30], dtype="Int64"),
    })
    BarStore(url).upsert_bars("AAPL", frame)
    monkeypatch.setenv("MARKET_PIPELINE_DB_URL", url)
    return tmp_path


def export(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["bars", "AAPL", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_new_file_is_written_whole(stored, capsys):
    target = stored / "out" / "aapl.csv"
    target.parent.mkdir()
    code, out, _ = export(capsys, "--csv", str(target))
    assert code == 0 and "3 bar(s) of 1 symbol(s) (none) written to" in out
    assert pd.read_csv(target)["close"].tolist() == [1.2, 2.2, 3.2]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # a normal file, not the temp file's 0600
    assert leftovers(target.parent) == []


def test_an_existing_file_is_kept_unless_forced(stored, capsys):
    target = stored / "notes.csv"
    target.write_text("my own notes\n")
    code, _, err = export(capsys, "--csv", str(target))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "the file exists and was left as it is: add --force to replace it" in err
    assert target.read_text() == "my own notes\n" and leftovers(stored) == []
    # a link to a system file counts as an existing file too: neither the link nor its target changes
    system = stored / "crontab"
    system.write_text("* * * * * root true\n")
    link = stored / "link.csv"
    link.symlink_to(system)
    assert export(capsys, "--csv", str(link))[0] == 2
    assert system.read_text() == "* * * * * root true\n" and link.is_symlink()
    # --force replaces the file (the link itself, not what it points to)
    code, _, _ = export(capsys, "--csv", str(target), "--force")
    assert code == 0 and pd.read_csv(target)["symbol"].tolist() == ["AAPL"] * 3
    assert export(capsys, "--csv", str(link), "--force")[0] == 0
    assert not link.is_symlink() and system.read_text() == "* * * * * root true\n"
    assert leftovers(stored) == []


@pytest.mark.parametrize(
    "where, expected",
    [
        ("no/such/folder/bars.csv", "does not exist: create it (mkdir -p"),
        (".", "that is a folder: name a file in it, e.g. --csv"),
    ],
)
def test_a_missing_folder_or_a_folder_as_the_file_is_one_line_exit_2(stored, capsys, where, expected):
    code, out, err = export(capsys, "--csv", str(stored / where))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("market-pipeline: error: --csv ") and expected in err
    assert not (stored / "no").exists()


def test_a_folder_that_may_not_be_written_is_one_line_exit_2(stored, capsys):
    folder = stored / "locked"
    folder.mkdir()
    mounted = False
    if os.geteuid() == 0:  # root writes anywhere its permission bits say no: a read-only filesystem says no to root too
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True).returncode == 0
        if not mounted:
            pytest.skip("running as root without a way to mount a read-only filesystem")
    else:
        folder.chmod(0o500)
    try:
        code, _, err = export(capsys, "--csv", str(folder / "bars.csv"))
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert "may not be written" in err or "cannot write it" in err
        assert list(folder.iterdir()) == []
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        else:
            folder.chmod(0o700)


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary_file(stored, capsys, monkeypatch):
    target = stored / "bars.csv"
    target.write_text("the previous export\n")

    def full_disk(self, handle, index):  # the disk fills while the rows are written
        handle.write("symbol,date\nAAPL,2024-")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    code, _, err = export(capsys, "--csv", str(target), "--force")
    assert code == 2 and "cannot write it (No space left on device); nothing was written" in err
    assert target.read_text() == "the previous export\n" and leftovers(stored) == []


def test_force_without_csv_is_refused(stored, capsys):
    code, _, err = export(capsys, "--force")
    assert code == 2 and "--force only applies to --csv FILE" in err


def _umask() -> int:
    return bars_command._umask()


def test_standard_output_is_unchanged(stored, capsys):
    code, out, _ = export(capsys, "--csv", "-", "--end", dt.date(2024, 1, 3).isoformat())
    assert code == 0 and out.splitlines()[0].startswith("symbol,date,open") and len(out.splitlines()) == 3
