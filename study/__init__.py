"""Experiment tooling beside the method: reports on a tree of runs (report/) and the
evidence study of docs/RESULTS.md (evidence/). crest/ and libml/ import nothing from here."""
