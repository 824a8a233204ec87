"""Audio-MLP (Morshed & Ahsan, HEAR 2021): the gated-MLP denoising autoencoder, its input
scaling, embedding and unsupervised pretraining; shares the gated-MLP blocks, the padding and
chunking and the scene algorithm with bow.kwmlp."""
