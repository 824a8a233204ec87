"""Classification heads on feature sets: the MLP head, evaluation protocols, metrics."""
