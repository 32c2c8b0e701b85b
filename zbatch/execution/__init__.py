"""One run in one process, put together: options.py is how a run is asked for (RunOptions),
setup.py assembles it (prepare → build → run → finish), plan.py is the dry run, runlog.py is
OUTDIR/run.log."""
