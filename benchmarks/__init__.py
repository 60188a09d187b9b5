"""Benchmarks of the qsensor services: run them with `python -m benchmarks [name ...]`."""
