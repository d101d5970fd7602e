"""dualscreen serving: the runtime contract, predictors and the three ways to score."""
