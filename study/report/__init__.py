"""Reports on a tree of runs: Markdown tables, the paper's claims checked, PNG plots.

runs.py reads the runs; tables.py, claims.py and plots.py each make one part;
document.py puts them together. scripts/summarize.py is the command line.
"""
