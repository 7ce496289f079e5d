"""pytest-benchmark suites: the ops and a full unlearning step against their peers.

Modes and how to run them: conftest.py; results: RESULTS.md."""
