"""Age: the age groups and the uncertainty of age estimates (intervals, calibration)."""
