"""`python -m gateway.cli …` runs `rentgate …` (tests and benchmarks start gateways this way)."""

import sys

from gateway.cli.main import main

sys.exit(main())
