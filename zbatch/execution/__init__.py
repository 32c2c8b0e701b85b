"""One run in one process, put together: setup.py assembles a run (input checked, OUTDIR held,
pipeline, dispatcher, summary); plan.py is the dry run; runlog.py is OUTDIR/run.log."""
