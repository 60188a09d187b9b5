"""`qsensor-topside`: the topside daemon's live mirror of every vehicle's recordings."""
