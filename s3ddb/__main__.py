"""``python -m s3ddb`` is the ``s3ddb`` command."""

import sys

from s3ddb.cli import main

sys.exit(main())
