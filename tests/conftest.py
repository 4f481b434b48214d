import os

# Tests run on the CPU; keep XLA from grabbing every core for one op so pytest stays responsive.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
