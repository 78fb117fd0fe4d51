"""Super-resolution x4: Real-ESRGAN RRDBNet and SRVGGNetCompact, loading released weights."""
