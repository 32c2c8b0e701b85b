"""Reading an OUTDIR back: the final outcome per id (outcomes.py), the status figures (status.py),
export to a file (export.py)."""
