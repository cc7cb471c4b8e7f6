"""Studies: many runs (subjects x layers x weights) from one study file, as jobs on Dask (core.study.execute)."""
