"""``python -m pano360 ...`` (so ``accelerate launch -m pano360 train ...`` works)."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
