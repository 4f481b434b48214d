import sys

from sr3_jax.cli import entry

sys.exit(entry())
