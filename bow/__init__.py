"""bow: audio embeddings without convolutions or attention (bag-of-audio-words and KW-MLP)."""
__version__ = "0.1.0"
