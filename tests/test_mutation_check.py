"""scripts/mutation_check.sh: every listed mutation still applies, and a run reports caught,
survived and stale mutations correctly without ever modifying the working tree."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "mutation_check.sh"
SEEDING = ROOT / "src" / "rls" / "seeding.py"


def _run(*args):
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip


def _check_report(out, caught_by):
    lines = out.stdout.splitlines()
    assert out.returncode == 1, out.stdout + out.stderr
    assert lines[0].startswith("CAUGHT") and caught_by in lines[0], lines[0]
    assert lines[1].startswith("SURVIVED"), lines[1]  # a docstring change: no test can see it
    assert lines[2].startswith("STALE") and "found 0 times" in lines[2], lines[2]
    assert lines[3] == "mutation_check: 3 mutations, 1 caught, 1 survived, 1 stale"


def _listing(path, tests):
    path.write_text(
        "# a comment line\n\n"
        f"src/rls/seeding.py ||| & (2**63 - 1) ||| & (2**62 - 1) ||| {tests}\n"
        f'src/rls/seeding.py ||| """A stable 63-bit seed ||| """A stable seed ||| {tests}\n'
        f"src/rls/seeding.py ||| text that is not in the file ||| x ||| {tests}\n"
    )
    return path


def test_every_listed_mutation_still_applies():
    out = _run("--dry-run")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "STALE" not in out.stdout
    assert sum(line.startswith("OK ") for line in out.stdout.splitlines()) >= 8


def test_a_run_classifies_mutations_on_a_copy(tmp_path):
    """A probe test (no torch: fast) that fails exactly when the first mutation is applied
    to the copy the script runs in."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "from pathlib import Path\n\n\ndef test_mask():\n"
        "    assert '& (2**63 - 1)' in Path('src/rls/seeding.py').read_text()\n"
    )
    before = SEEDING.read_bytes()
    _check_report(_run("--list", _listing(tmp_path / "m.txt", probe)), "test_probe.py::test_mask")
    assert SEEDING.read_bytes() == before


@pytest.mark.slow
def test_a_run_with_the_real_tests(tmp_path):
    before = SEEDING.read_bytes()
    out = _run("--list", _listing(tmp_path / "m.txt", "tests/test_seeding.py -k stable"))
    _check_report(out, "test_seed_is_stable_and_distinct")
    assert SEEDING.read_bytes() == before
