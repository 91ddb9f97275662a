"""`python -m bench.evaluate`: an alias of `ipa evaluate` (ipa/evaluation/evaluate.py), where the page and the benchmarks share it."""

import sys

from ipa.evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
