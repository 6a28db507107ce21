"""Simulated devices and networks, benchmarks, results. Not part of the test run."""
