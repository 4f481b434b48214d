import sys

from sr3_jax.cli import main

sys.exit(main())
