"""dualscreen: the command line that puts serving and, where installed, training together."""
