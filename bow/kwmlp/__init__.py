"""KW-MLP (Morshed & Ahsan, HEAR 2021): the gated-MLP model and its fast encoder, embedding,
pretraining, scene algorithms."""
