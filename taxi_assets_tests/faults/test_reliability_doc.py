"""docs/RELIABILITY.md lists exactly the cases the fault-injection suite proves, each once."""

import ast
import re
from collections import Counter
from pathlib import Path

FAULTS = Path(__file__).parent
# The fault suite: this folder, and the GCP faults (a fault proxy in front of the emulators, beside their fixtures).
SUITE = [*sorted(FAULTS.glob("test_*.py")), FAULTS.parent / "gcp" / "test_gcp_faults.py"]
RELIABILITY = FAULTS.parents[1] / "docs" / "RELIABILITY.md"


def suite_cases() -> list[str]:
    """The names in ``@pytest.mark.fault_case("...")`` of every test module of the suite (a case may have several
    tests)."""
    cases = []
    for module in SUITE:
        for node in ast.walk(ast.parse(module.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "fault_case"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                cases.append(node.args[0].value)
    return cases


def documented_cases(text: str) -> list[str]:
    """The first cell of each row of the fault table (below its header and separator rows)."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [re.split(r"\s*\|\s*", row.strip())[1] for row in rows[2:]]


def test_the_fault_table_lists_each_case_of_the_suite_once():
    documented, proven = documented_cases(RELIABILITY.read_text()), suite_cases()
    assert proven, "the fault suite marks no case"
    assert [case for case, n in Counter(documented).items() if n > 1] == []
    assert sorted(set(documented) - set(proven)) == [], "documented, but no test proves it"
    assert sorted(set(proven) - set(documented)) == [], "proven by a test, but missing from docs/RELIABILITY.md"


def test_documented_cases_reads_the_first_cell_of_each_row():
    table = "| Case | What |\n|---|---|\n| Source trickles | read timeout |\n| Disk full | error |\n"
    assert documented_cases(table) == ["Source trickles", "Disk full"]
