"""Parts shared by the Pi service and the topside: sensor driver, simulator, recorder, clock."""
