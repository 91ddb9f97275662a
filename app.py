"""IPA Playground: the web app's entry point for `python app.py` and Hugging Face Spaces (their app_file); the same as
`ipa serve`. Every flag: `python app.py --help` (app/main.py)."""

import sys

from app.main import main

if __name__ == "__main__":
    sys.exit(main())
