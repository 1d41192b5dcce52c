"""Runs each example on the command lines its flag fuzzer once crashed on.

fuzz/regressions/flags_NAME/ holds libFuzzer inputs for the command-line
parser of an example: arguments separated by NUL bytes, as fuzz/fuzz_flags.h
splits them. CI fuzzes the file formats only (the flag fuzzers compile each
example whole, under two sanitizers); this replays the saved command lines
against the examples the plain build made, so that a parser bug once fixed
stays fixed. Each must end with a usage error (exit status 2) or a clean
failure (1) within the time limit: never a signal, never a hang.

  replay_flag_regressions.py --regressions fuzz/regressions \
      --program flags_train_classifier=build/examples/train_classifier ...
"""

import argparse
import pathlib
import subprocess
import sys


def words_of(data: bytes) -> list:
    """The arguments fuzz_flags.h makes of an input (at most 63)."""
    words = data.split(b"\0")
    if words and words[-1] == b"":
        words.pop()
    # The harness passes bytes; so does this (no decoding, no NULs).
    return words[:63]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--regressions", required=True, type=pathlib.Path)
    parser.add_argument("--program", action="append", default=[],
                        help="TARGET=PATH: fuzz target name and the example it parses for")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()

    programs = dict(p.split("=", 1) for p in args.program)
    failures = []
    replayed = 0
    for folder in sorted(args.regressions.glob("flags_*")):
        if folder.name not in programs:
            failures.append(f"{folder.name}: no program given for these regressions")
            continue
        for case in sorted(folder.iterdir()):
            argv = [programs[folder.name].encode()] + words_of(case.read_bytes())
            try:
                run = subprocess.run(argv, stdin=subprocess.DEVNULL,
                                     capture_output=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                failures.append(f"{folder.name}/{case.name}: still running after "
                                f"{args.timeout:g} s")
                continue
            replayed += 1
            outcome = f"{folder.name}/{case.name}: exit status {run.returncode}"
            if run.returncode not in (1, 2):
                failures.append(outcome + "\n" + run.stderr.decode(errors="replace")[-2000:])
            else:
                said = (run.stderr or run.stdout).decode(errors="replace").strip()
                print(outcome + ": " + (said.splitlines() or [""])[0][:160])
    if replayed == 0:
        failures.append(f"no regressions found under {args.regressions}")
    for f in failures:
        print("FAILED", f)
    print(f"{replayed} command lines replayed, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
