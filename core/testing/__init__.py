"""Fixtures for tests and benchmarks: a synthetic results folder written through the real store."""
