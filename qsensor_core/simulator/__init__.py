"""A firmware-faithful Q-Series sensor on a pseudo-terminal, for tests, demos and drills."""
