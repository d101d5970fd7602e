"""`python -m dualscreen`: the same as the `dualscreen` console script."""

from dualscreen.cli import main

main()
