"""dualscreen training: corpus tools, fine-tuning, calibration, thresholds, evaluation, registry."""
