"""tests/mutants.yaml, the bugs `make mutate` plants, still matches the code, and the harness judges a run right.
`make mutate` itself is not part of `make test`: it runs the tests once per mutant."""

import re

import mutate  # tests/mutate.py
import pytest
from support import ROOT


def test_every_mutant_still_applies_and_names_tests_that_exist():
    problems = []
    for mutant in mutate.load():
        try:
            mutate.mutated(mutant)
        except mutate.Stale as error:
            problems.append(str(error))
        for test in mutant["tests"]:
            path, _, name = test.partition("::")
            if not (ROOT / path).is_file():
                problems.append(f"{mutant['id']}: no {path}")
            elif name and not re.search(rf"^def {re.escape(name.split('[')[0])}\(", (ROOT / path).read_text(), re.M):
                problems.append(f"{mutant['id']}: no {test}")
    assert problems == []


@pytest.mark.parametrize(
    "code, output, expected",
    [
        (
            1,
            "F\nFAILED tests/test_x.py::test_y - AssertionError\n1 failed in 1s",
            ("KILLED", "by tests/test_x.py::test_y"),
        ),
        (
            1,
            "E\nERROR tests/test_x.py::test_y - psycopg2.Error\n1 error in 1s",
            ("KILLED", "by tests/test_x.py::test_y"),
        ),
        (
            1,
            "FAILED tests/test_x.py::test_y[a b - c] - assert 0\n1 failed",
            ("KILLED", "by tests/test_x.py::test_y[a b - c]"),
        ),
        (2, "ERROR collecting tests/test_x.py\nInterrupted: 1 error during collection", ("KILLED",)),
        (None, "", ("KILLED",)),
        (0, "....\n4 passed in 2s", ("SURVIVED", "")),
        (0, "ss\n2 skipped in 1s", ("ERROR",)),  # nothing ran: no verdict
        (4, "ERROR: not found: tests/test_x.py::test_z", ("ERROR",)),
        (5, "no tests ran in 0.01s", ("ERROR",)),
    ],
)
def test_the_harness_counts_only_a_failing_test_as_a_kill(code, output, expected):
    result = mutate.verdict(code, output)
    assert result[: len(expected)] == expected


def test_a_mutant_whose_text_is_not_there_exactly_once_is_stale(tmp_path):
    (tmp_path / "loop.py").write_text("wait()\nwait()\nstop()\n")
    mutant = {"id": "m", "file": "loop.py", "replace": "go()"}
    assert mutate.mutated({**mutant, "find": "stop()"}, tmp_path) == "wait()\nwait()\ngo()\n"
    for find in ("wait()", "sleep()"):
        with pytest.raises(mutate.Stale):
            mutate.mutated({**mutant, "find": find}, tmp_path)


@pytest.mark.parametrize(
    "name, text, find, replace",
    [
        ("loop.py", "while True:\n    work()\n    rest()\n", "    rest()\n", ""),  # fine: stays valid
        ("loop.py", "if ready:\n    work()\n", "    work()\n", ""),  # an empty block
        # Part of a line: the rest of its indent stays, and the next line inherits it.
        ("loop.py", "try:\n    work()\nexcept OSError:\n    pass\n", "  work()\n", ""),
        ("app.yaml", "a: 1\nb: [2]\n", "[2]", "[2"),
    ],
)
def test_a_mutant_that_stops_its_file_from_parsing_is_refused(tmp_path, name, text, find, replace):
    # Such a mutant fails every test for that alone: counted as killed, it would prove nothing.
    (tmp_path / name).write_text(text)
    mutant = {"id": "m", "file": name, "find": find, "replace": replace}
    if text.startswith("while"):
        assert mutate.mutated(mutant, tmp_path) == "while True:\n    work()\n"
    else:
        with pytest.raises(mutate.Stale, match="no longer parses"):
            mutate.mutated(mutant, tmp_path)
