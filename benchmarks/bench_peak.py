"""`fowm bench peak` as a script: prints one JSON line (options as in fowm_core.jobs.bench)."""

from __future__ import annotations

import sys

from fowm_core.jobs.bench import main

if __name__ == "__main__":
    sys.exit(main(["peak", *sys.argv[1:]]))
