"""Networks. `unet` holds the SR3 U-Net."""
