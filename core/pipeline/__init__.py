"""The staged pipeline: the stage graph and its runner, the stages, the results store, prewarm and fault hooks."""
