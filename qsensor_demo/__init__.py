"""`make demo`: runs the system end to end on a simulated sensor, no hardware needed."""
