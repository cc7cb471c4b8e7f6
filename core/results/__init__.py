"""Reading a results folder (the one reader, :class:`Results`) and exporting from it (:mod:`core.results.export`)."""
from core.results.reader import Results, StageArrays, list_runs, open_results

__all__ = ["Results", "StageArrays", "list_runs", "open_results"]
