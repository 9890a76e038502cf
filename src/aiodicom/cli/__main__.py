import sys

from aiodicom.cli import main

sys.exit(main())
