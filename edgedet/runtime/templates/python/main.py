"""`python -m edgedet_runtime IMAGE...` (run in ARTIFACT/runtime/python): detections as JSON lines; errors are one
line on stderr and exit code 2."""
import sys

from . import main

sys.exit(main())
