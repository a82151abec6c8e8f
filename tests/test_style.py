"""The code's own checks: ruff's lint and format, with the settings of ruff.toml."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).parent / "ruff"  # the virtual environment's, pinned in requirements-dev.txt


def ruff(*args, cwd=ROOT):
    return subprocess.run([str(RUFF), *args], cwd=cwd, capture_output=True, text=True)


def test_ruff_finds_nothing_to_fix():
    result = ruff("check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_code_is_formatted_as_ruff_formats_it():
    result = ruff("format", "--no-cache", "--check", "--diff", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_reports_an_unused_import_and_a_misformatted_line(tmp_path):
    (tmp_path / "ruff.toml").write_text((ROOT / "ruff.toml").read_text())
    (tmp_path / "bad.py").write_text("import os\nx = {'a':1}\n")
    assert ruff("check", "--no-cache", ".", cwd=tmp_path).returncode == 1
    assert ruff("format", "--no-cache", "--check", ".", cwd=tmp_path).returncode == 1


def shared_lines(path):
    """The lines between the two loops' markers: the configuration, the stop request, the signals, the output
    and the wait for the server."""
    text = path.read_text()
    start = text.index('# From here to "end of the shared lines"')
    return text[start : text.index("# End of the shared lines.", start)]


def test_the_lines_the_two_loops_share_are_the_same_in_both():
    # Each image holds only its own folder, so the loops cannot import these lines from one place.
    pusher, consumer = (shared_lines(ROOT / loop / f"{loop}.py") for loop in ("pusher", "consumer"))
    assert pusher == consumer
    assert pusher.count("\n") > 100, "the markers enclose less than they should"
