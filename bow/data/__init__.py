"""Data sets: the three folder layouts as clip records, clip lists and fingerprints, the built-in
synthetic set."""
