"""The ``tlcourse`` command: ``selfcheck``, ``grade``, ``exercises``, ``timings``, ``cards``, ``interview``, ``progress``."""
from __future__ import annotations

import sys

USAGE = """usage: tlcourse COMMAND [options]

commands:
  selfcheck   device, versions, data folders and a short training step checked against the CPU
  grade       grade notebooks, each in a sandbox: tlcourse grade SUBMISSIONS_DIR --csv grades.csv
  exercises   regenerate exercises/ from solutions/ (--check: fail if they drifted)
  timings     execute every notebook with papermill and rewrite the timing table
  cards       flashcards from the chapters: tlcourse cards --anki deck.apkg --csv cards.csv
  interview   a timed mock interview in the terminal, scored on the chapters' rubrics (-n 3 --seconds 120)
  progress    your interview scores per chapter and when each is due (--plot progress.png)

Each command's own options: tlcourse COMMAND --help
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
    elif command == "cards":
        from .cards import main as run
    elif command == "interview":
        from .interview import main as run
    elif command == "progress":
        from .interview.progress import main as run
    else:
        print(f"tlcourse: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
