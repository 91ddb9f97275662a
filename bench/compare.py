"""`python -m bench.compare`: an alias of `ipa compare` (ipa/evaluation/compare.py), where the page and the benchmarks share it."""

import sys

from ipa.evaluation.compare import main

if __name__ == "__main__":
    sys.exit(main())
