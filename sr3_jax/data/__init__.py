"""Data: embedded photographs, degradations on device (and, later, TFDS/Grain loaders)."""
