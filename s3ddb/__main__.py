"""``python -m s3ddb`` is the ``s3ddb`` command."""

import sys

from s3ddb.cli import main

# guarded: a --workers load starts its workers with multiprocessing's spawn, which imports this
# module again in every worker (as __mp_main__); unguarded, each worker would run the command
if __name__ == "__main__":
    sys.exit(main())
