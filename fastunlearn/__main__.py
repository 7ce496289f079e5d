"""``python -m fastunlearn``: the command line of fastunlearn.cli."""

from fastunlearn.cli import main

raise SystemExit(main())
