"""`python -m bench.compose`: an alias of `ipa compose` (ipa/evaluation/compose.py), where the page and the benchmarks share it."""

import sys

from ipa.evaluation.compose import main

if __name__ == "__main__":
    sys.exit(main())
