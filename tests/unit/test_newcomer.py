"""A newcomer's first hour: the demo how-to and README commands work as printed."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import phonenumbers

from dce.exchange.demo import DEMO_CALLER, DEMO_CALLERS, DEMO_CALLERS_FILE, demo_howto

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_demo_callers_are_valid_numbers() -> None:
    """The fraud gate flags invalid ANIs: the demo's callers must not be."""
    for number in DEMO_CALLERS:
        assert phonenumbers.is_valid_number(phonenumbers.parse(number)), number
    commands = [line for text in (demo_howto("k"), README) for line in text.splitlines()
                if "curl" in line or "sipp " in line or "printf" in line]
    assert not [line for line in commands if "+15551230000" in line or "uac_basic.xml" in line]


def test_callees_start_in_the_background_without_a_shell_ampersand() -> None:
    for text in (demo_howto("k"), README):
        sipp_lines = [line for line in text.splitlines() if "sipp " in line]
        assert sipp_lines
        for line in sipp_lines:
            assert not re.search(r"sipp [^#]*&(?!&)", line), line  # `sipp ... &` stops on tty output
        assert any("-sn uas" in line and "-bg" in line for line in sipp_lines)


def test_the_demo_calls_from_its_callers_file_and_pings_for_the_same_caller() -> None:
    howto = demo_howto("k")
    assert f"> {DEMO_CALLERS_FILE}" in howto and f"-inf {DEMO_CALLERS_FILE}" in howto
    assert f'"CID":"{DEMO_CALLER}"' in howto and f'"CID":"{DEMO_CALLER}"' in README
    assert "sixth call" in howto and "sixth call" in README  # what the fraud gate does to repeats


def test_readme_api_examples_carry_the_key_and_build_a_whole_campaign() -> None:
    curls = [line for line in README.splitlines() if re.search(r"\b(curl|api) .*localhost:8080/api/v1/", line)]
    for line in curls:
        if "/rtb/" not in line:  # RTB pings are public (the campaign key is in the path)
            assert "X-API-Key" in line or line.lstrip().startswith("api "), line
    for collection in ("buyers", "targets", "publishers", "campaigns", "numbers"):
        assert any(f"-XPOST localhost:8080/api/v1/{collection} " in line for line in curls), collection


def test_the_demo_config_and_callers_file_are_git_ignored() -> None:
    for name in ("dce-demo.yaml", DEMO_CALLERS_FILE):
        result = subprocess.run(["git", "check-ignore", "-q", name], cwd=REPO, check=False)
        assert result.returncode == 0, f"{name} is not git-ignored"
