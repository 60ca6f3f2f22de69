"""Scoring: trials, metrics (EER, minDCF), list normalisation, calibration and Cllr."""
