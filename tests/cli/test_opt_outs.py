"""``zapq opt-outs``: a company's opt-out list from the command line, through the real API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from libs.cli.output import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from tests.cli.conftest import zapq


def test_add_list_import_rm(capsys: pytest.CaptureFixture[str], company: dict[str, Any], tmp_path: Path) -> None:
    of = ("--company", str(company["id"]))
    # When two numbers are added, one of them twice
    assert zapq(capsys, "opt-outs", "add", *of, "+55 11 98888-7777", "5511977776666")[:2] == (
        EXIT_OK,
        "added 2 (0 already on the list)\n",
    )
    assert zapq(capsys, "opt-outs", "add", *of, "5511988887777")[1] == "added 0 (1 already on the list)\n"
    # And a CSV is imported
    csv = tmp_path / "stop.csv"
    csv.write_text("phone\n5511911110001\n5511977776666\n")
    assert zapq(capsys, "opt-outs", "import", *of, str(csv))[1] == "2 rows: added 1, 1 already listed\n"
    # Then the list shows the three, from the CLI and the CSV
    code, out, _ = zapq(capsys, "opt-outs", "list", *of, "--json")
    assert code == EXIT_OK
    assert [(r["phone"], r["source"]) for r in json.loads(out)] == [
        ("5511911110001", "csv"),
        ("5511977776666", "cli"),
        ("5511988887777", "cli"),
    ]
    # When one is removed, it is gone; removing it again exits 3
    assert zapq(capsys, "opt-outs", "rm", *of, "5511977776666")[:2] == (EXIT_OK, "removed\n")
    assert zapq(capsys, "opt-outs", "rm", *of, "5511977776666")[0] == EXIT_NOT_FOUND


def test_refusals_exit_2_with_the_reason(
    capsys: pytest.CaptureFixture[str], company: dict[str, Any], tmp_path: Path
) -> None:
    of = ("--company", str(company["id"]))
    code, _, err = zapq(capsys, "opt-outs", "add", *of, "12")
    assert code == EXIT_USAGE and "7 to 15 digits" in err
    csv = tmp_path / "bad.csv"
    csv.write_text("phone\n5511911110001\nnope\n")
    code, _, err = zapq(capsys, "opt-outs", "import", *of, str(csv))
    assert code == EXIT_USAGE and "nothing was imported" in err
    assert json.loads(zapq(capsys, "opt-outs", "list", *of, "--json")[1]) == []
