"""The evidence study of docs/RESULTS.md: its plan (planner.py), the regime map
(regime.py) and the document written from its records (document.py). scripts/evidence.py
runs it; scripts/diagnose.py reads the map."""
