"""Drift model between the two clocks and the fused table (not built yet)."""
