"""The bag-of-audio-words model (Verma): tokens, autoencoders, codebooks, count vectors, embedding,
bundle."""
