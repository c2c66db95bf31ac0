"""The ``tlcourse`` command: ``selfcheck``, ``grade``, ``exercises`` and ``timings``."""
from __future__ import annotations

import sys

USAGE = """usage: tlcourse COMMAND [options]

commands:
  selfcheck   device, versions, data folders and a short training step checked against the CPU
  grade       grade notebooks, each in a sandbox: tlcourse grade SUBMISSIONS_DIR --csv grades.csv
  exercises   regenerate exercises/ from solutions/ (--check: fail if they drifted)
  timings     execute every notebook with papermill and rewrite the timing table
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "selfcheck":
        from .selfcheck import main as run
    elif command == "grade":
        from .grading import main_grade as run
    elif command == "exercises":
        from .grading import main_exercises as run
    elif command == "timings":
        from .notebooks import main_timings as run
    else:
        print(f"tlcourse: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
