import sys

from rls.metrics.cli import main

sys.exit(main())
