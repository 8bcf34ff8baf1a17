"""`python -m bench.ingest [--small] [--messages N] [--repeat R] [--streams S] [--replicas 1 2]`."""

import sys

from bench.ingest.throughput import main

sys.exit(main())
