"""bow: audio embeddings without convolutions or attention (bag-of-audio-words and KW-MLP)."""
__version__ = "0.2.0"   # the release (CHANGELOG.md); in every store's and bundle's config
