"""What the end-to-end checks share: each check prints a line and is
remembered if it failed; finish() reports and exits 0 only if none did."""
import sys

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def finish(name):
    print(f"{len(failures)} failed" if failures else f"all {name} checks passed")
    sys.exit(1 if failures else 0)
