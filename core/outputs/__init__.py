"""Reading a results folder (the one reader, :class:`Results`) and exporting from it (:mod:`core.outputs.export`)."""
from core.outputs.reader import Results, StageArrays, list_runs, open_results

__all__ = ["Results", "StageArrays", "list_runs", "open_results"]
