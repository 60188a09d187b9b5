"""Biospherical Q-Series (firmware 4.003, 2150 mode): protocol facts, line grammar, driver."""
