"""`make mutate`: plant each bug of tests/mutants.yaml in a copy of the project, one at a time, and run the
tests that should catch it. A mutant is KILLED when a test fails, SURVIVED when every test passes.

    python tests/mutate.py                      every mutant
    python tests/mutate.py pusher-event-stop    one (or a few) by id
    python tests/mutate.py --full ID            against the whole suite, as `make test` would run it
    python tests/mutate.py --list               the ids and the bug each plants

Why a curated list and not mutmut or cosmic-ray: the loops run as subprocesses in most tests, where mutmut's
per-function test selection cannot see them; half the bugs worth planting are in YAML, SQL and Dockerfiles,
which neither tool mutates; and each run of the relevant tests takes from seconds to a minute, too long for the
hundreds of operator swaps a tool generates. Each mutant here is a bug someone could plausibly write.

A mutant whose text is not found exactly once is stale: the harness stops and says so, so that the list keeps
up with the code (tests/test_mutants.py checks the same in `make test`).
Exit status: 0 every mutant killed, 1 some survived, 2 a stale mutant, a failing baseline or a harness error.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "tests" / "mutants.yaml"
FIELDS = ("id", "file", "find", "replace", "bug", "tests")
# The whole suite but the style checks: ruff would fail any mutant whose replacement it would have formatted
# otherwise, and a mutant is there to find out whether a bug is caught, not its layout.
FULL = ["tests", "--deselect", "tests/test_style.py"]
TIMEOUT = 900  # seconds for one mutant's tests; a hang this long fails `make test` too, so it counts as killed


class Stale(Exception):
    pass


def load(path=MUTANTS):
    """The mutants, each a dict with FIELDS; raises ValueError on a malformed list."""
    mutants = yaml.safe_load(path.read_text())
    if not isinstance(mutants, list) or not mutants:
        raise ValueError(f"{path}: expected a list of mutants")
    seen = set()
    for n, mutant in enumerate(mutants):
        if not isinstance(mutant, dict) or set(mutant) != set(FIELDS):
            raise ValueError(f"{path}: mutant #{n + 1} must have exactly the fields {', '.join(FIELDS)}")
        if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", str(mutant["id"])) or mutant["id"] in seen:
            raise ValueError(f"{path}: mutant #{n + 1}: id {mutant['id']!r} is not a unique lower-case-dashed name")
        seen.add(mutant["id"])
        tests = mutant["tests"]
        if (
            not isinstance(tests, list)
            or not tests
            or not all(isinstance(t, str) and t.startswith("tests/") for t in tests)
        ):
            raise ValueError(f"{path}: {mutant['id']}: tests must be a list of paths or node ids under tests/")
        if (
            not all(isinstance(mutant[k], str) for k in ("file", "find", "replace", "bug"))
            or mutant["find"] == mutant["replace"]
            or not mutant["find"]
        ):
            raise ValueError(
                f"{path}: {mutant['id']}: file, find, replace and bug are text, find non-empty "
                "and different from replace"
            )
    return mutants


def mutated(mutant, root=ROOT):
    """The text of the mutant's file with the bug planted; Stale if its text is not there exactly once."""
    path = root / mutant["file"]
    if not path.is_file():
        raise Stale(f"{mutant['id']}: {mutant['file']} does not exist")
    text = path.read_text()
    found = text.count(mutant["find"])
    if found != 1:
        raise Stale(f"{mutant['id']}: its text is found {found} times in {mutant['file']}, not once")
    text = text.replace(mutant["find"], mutant["replace"])
    # A bug that stops the file from even loading fails every test for that alone, and proves nothing.
    try:
        if path.suffix == ".py":
            compile(text, mutant["file"], "exec")
        elif path.suffix in (".yaml", ".yml"):
            list(yaml.safe_load_all(text))
    except (SyntaxError, yaml.YAMLError) as error:
        raise Stale(f"{mutant['id']}: with it, {mutant['file']} no longer parses ({error})") from None
    return text


def project_files():
    """What a fresh clone would hold, with the working tree's changes: tracked and new, not ignored, files."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [name for name in listing.split("\0") if name and (ROOT / name).is_file()]


def copy_project(files, dest):
    for name in files:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)


def run_tests(tree, tests, log_path):
    """pytest on the copy, stopping at the first failure. Returns (returncode, output)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                cwd=tree,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=TIMEOUT,
            )
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
    return code, Path(log_path).read_text()


def verdict(code, output):
    """KILLED, SURVIVED or ERROR, and a word on why."""
    if code is None:
        return "KILLED", f"its tests hung for {TIMEOUT} s"
    if code == 1:
        failed = re.findall(r"^(?:FAILED|ERROR) ([^\s\[]+(?:\[.*?\])?)(?= - |$)", output, re.M)
        return "KILLED", f"by {failed[0]}" if failed else "a test failed"
    if code == 2:
        return "KILLED", "the tests could not even be collected"
    if code == 0:
        if re.search(r"\b\d+ passed", output):
            return "SURVIVED", ""
        return "ERROR", "no test ran (all skipped or deselected)"
    return "ERROR", f"pytest exited {code}"


def tail(text, lines=30):
    return "\n".join(text.rstrip().splitlines()[-lines:])


def duration(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("ids", nargs="*", help="the mutants to run (default: all)")
    parser.add_argument(
        "--full", action="store_true", help="run the whole suite against each mutant, not only the tests it names"
    )
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the check that the tests pass on the unmutated copy"
    )
    args = parser.parse_args()

    try:
        mutants = load()
    except ValueError as error:
        print(f"mutate: {error}", file=sys.stderr)
        return 2
    if args.list:
        for mutant in mutants:
            print(f"{mutant['id']:<32} {mutant['file']:<28} {mutant['bug']}")
        return 0
    by_id = {m["id"]: m for m in mutants}
    unknown = [i for i in args.ids if i not in by_id]
    if unknown:
        print(f"mutate: no mutant {', '.join(unknown)} in {MUTANTS.relative_to(ROOT)} (see --list)", file=sys.stderr)
        return 2
    chosen = [by_id[i] for i in args.ids] if args.ids else mutants

    # Every mutant must apply before anything runs: a stale one means the list no longer matches the code.
    stale = []
    for mutant in chosen:
        try:
            mutated(mutant)
        except Stale as error:
            stale.append(str(error))
    if stale:
        print("mutate: stale mutants; update tests/mutants.yaml:\n  " + "\n  ".join(stale), file=sys.stderr)
        return 2

    started = time.monotonic()
    files = project_files()
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        tmp = Path(tmp)
        pristine = tmp / "pristine"
        copy_project(files, pristine)

        if not args.no_baseline:
            # The same tests on the unmutated copy must pass, or a failure below would prove nothing.
            selection = FULL if args.full else list(dict.fromkeys(t for m in chosen for t in m["tests"]))
            # A node id inside a file that is selected whole would run twice.
            selection = [t for t in selection if "::" not in t or t.split("::")[0] not in selection]
            print(f"Baseline: {' '.join(selection)}, unmutated ...", flush=True)
            t0 = time.monotonic()
            code, output = run_tests(pristine, selection, tmp / "baseline.log")
            if verdict(code, output)[0] != "SURVIVED":
                print(
                    f"mutate: the tests fail without any mutant, so no verdict would mean anything:\n{tail(output)}",
                    file=sys.stderr,
                )
                return 2
            print(f"Baseline passed in {duration(time.monotonic() - t0)}", flush=True)

        results = []
        width = max(len(m["id"]) for m in chosen)
        for n, mutant in enumerate(chosen, 1):
            tree = tmp / "mutant"
            shutil.copytree(pristine, tree)
            (tree / mutant["file"]).write_text(mutated(mutant, pristine))
            t0 = time.monotonic()
            code, output = run_tests(tree, FULL if args.full else mutant["tests"], tmp / "mutant.log")
            result, why = verdict(code, output)
            results.append((mutant, result))
            print(
                f"[{n:>{len(str(len(chosen)))}}/{len(chosen)}] {result:<8} {mutant['id']:<{width}} "
                f"{duration(time.monotonic() - t0):>6}  {why or mutant['bug']}",
                flush=True,
            )
            if result == "ERROR":
                print(tail(output), flush=True)
            shutil.rmtree(tree)

    killed = [m["id"] for m, r in results if r == "KILLED"]
    survived = [m["id"] for m, r in results if r == "SURVIVED"]
    errors = [m["id"] for m, r in results if r == "ERROR"]
    print(
        f"\nScore: {len(killed)}/{len(results)} killed ({100 * len(killed) // len(results)}%) "
        f"in {duration(time.monotonic() - started)}"
    )
    if survived:
        print(f"Survived: {', '.join(survived)}")
    if errors:
        print(f"Errors: {', '.join(errors)}")
    return 2 if errors else 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
