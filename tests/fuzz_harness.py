"""Runs many ``packer`` command lines in one process, for the fuzz suite (tests/test_fuzz.py).

Each CLI start-up costs 1-2 s of imports, so the hypothesis batches run their documents through this
driver: it imports ``packer.cli`` once and calls the real click ``main`` for each command line, with
stdout and stderr captured, exactly as ``python -m packer.cli`` would run it except that an uncaught
exception is recorded (with the traceback Python would have printed) instead of ending the process.

    python tests/fuzz_harness.py CASES.json      (env: FUZZ_CASE_LIMIT_S, FUZZ_MEMORY_LIMIT in bytes)

CASES.json is a list of argument lists. For each case the driver prints one protocol line
``@@fuzz begin I`` before running it and ``@@fuzz result I {json}`` after; the runner in
test_fuzz.py watches for them so that a case that hangs (even inside a numba kernel, where no signal
reaches Python) or kills the process is pinned to its index, and the rest are run in a new process.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import sys
import time
import traceback

PROTOCOL = "@@fuzz"


class CaseTimeout(BaseException):
    """Raised by the per-case alarm (a BaseException, so no ``except Exception`` in packer swallows it)."""


def _on_alarm(signum, frame):
    raise CaseTimeout()


def run_case(main, argv: list[str], limit_s: int) -> dict:
    """Run one command line; its exit code, stdout and stderr, and how it ended."""
    out, err = io.StringIO(), io.StringIO()
    ended = "exit"
    code = 0
    t0 = time.perf_counter()
    signal.alarm(limit_s)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main.main(args=list(argv), prog_name="packer")
            except SystemExit as e:
                if e.code is None:
                    code = 0
                elif isinstance(e.code, int):
                    code = e.code
                else:  # sys.exit("message"): Python prints it and exits 1
                    err.write(f"{e.code}\n")
                    code = 1
    except CaseTimeout:
        ended, code = "timeout", -1
    except BaseException:  # what `python -m packer.cli` would print before dying with exit code 1
        ended, code = "traceback", 1
        err.write(traceback.format_exc())
    finally:
        signal.alarm(0)
    return {"ended": ended, "rc": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
            "seconds": time.perf_counter() - t0}


def main() -> None:
    cases = json.loads(open(sys.argv[1], encoding="utf-8").read())
    limit_s = int(os.environ.get("FUZZ_CASE_LIMIT_S", "30"))
    memory = int(os.environ.get("FUZZ_MEMORY_LIMIT", "0"))
    if memory:  # a units mistake must be refused, not allocated until the machine runs out
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    proto = sys.stdout
    signal.signal(signal.SIGALRM, _on_alarm)
    from packer.cli import main as cli_main

    for i, argv in enumerate(cases):
        print(f"{PROTOCOL} begin {i}", file=proto, flush=True)
        result = run_case(cli_main, argv, limit_s)
        print(f"{PROTOCOL} result {i} {json.dumps(result)}", file=proto, flush=True)


if __name__ == "__main__":
    main()
