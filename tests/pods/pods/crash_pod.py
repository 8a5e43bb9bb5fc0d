"""Notes its start in START_LOG and exits at once with status 3."""

import os
import sys
import time

with open(os.environ["START_LOG"], "a") as f:
    f.write(f"{time.monotonic()}\n")
sys.exit(3)
