"""Datasets: the input contract, the loaders of stimuli and responses, and the planted-truth simulation."""
