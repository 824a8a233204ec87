"""bow.bagofwords.encoder and .pca: shape tokens, the folded first layer, PCA against scikit-learn
and other linear maps, reconstructions, files of either kind."""
import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from bow.bagofwords.autoencoder import Autoencoder
from bow.bagofwords.corpus import logmel_clips
from bow.bagofwords.encoder import AutoencoderConfig, shape
from bow.bagofwords.model import load_encoder
from bow.bagofwords.pca import PCAEncoder
from bow.bagofwords.tokens import FAMILIES, grid
from bow.data.datasets import load_dataset
from bow.io.stage import ArtifactError

KINDS = {"autoencoder": Autoencoder, "pca": PCAEncoder}
SMALL = dict(hidden=32, epochs=1, batch_size=32, steps_per_epoch=3, max_val_tokens=500)


@pytest.fixture(scope="module")
def logmel(esc10_dir):
    """(fit, held-out) log-mel: 16 ESC-10 clips of folds 1-4, and 8 of fold 5."""
    clips = load_dataset(esc10_dir).clips
    fit = [c for c in clips if c.split != "5"][::20]
    held = [c for c in clips if c.split == "5"][::10]
    return logmel_clips(fit)[0], logmel_clips(held)[0]


def _tokens(logmel, family):
    return grid(logmel.float(), family).reshape(-1, grid(logmel[:1].float(), family).shape[-1])


def test_shape_tokens_have_zero_mean_and_keep_the_rest(logmel):
    tokens = _tokens(logmel[0][:4], "patch")
    s = shape(tokens)
    assert torch.allclose(s.mean(1), torch.zeros(len(s)), atol=1e-4)
    assert torch.allclose(s + tokens.mean(1, keepdim=True), tokens, atol=1e-4)


@pytest.mark.parametrize("kind", ["autoencoder", "pca"])
@pytest.mark.parametrize("tokens", ["raw", "shape"])
def test_folded_encoder_equals_shape_standardise_then_layers(logmel, kind, tokens):
    fit, held = logmel
    enc = KINDS[kind]("band_envelope", AutoencoderConfig(tokens=tokens, **SMALL)).fit(fit, held)
    x = _tokens(held, "band_envelope")
    h = enc._standardise(x)
    layers = enc.layers()
    for i, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if i < len(layers) - 1:
            h = h.relu()
    torch.testing.assert_close(enc.encode(x), h, rtol=1e-4, atol=1e-4)
    if tokens == "shape":            # shape codes ignore a token's level: adding dB changes nothing
        torch.testing.assert_close(enc.encode(x + 7.0), enc.encode(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tokens", ["raw", "shape"])
def test_pca_is_the_best_linear_map_of_its_rank(logmel, tokens):
    """Held-out MSE of standardised tokens: ours equals scikit-learn's PCA on the same
    standardised training tokens, and no other rank-k linear map does better."""
    fit, held = logmel
    pca = PCAEncoder("patch", AutoencoderConfig(tokens=tokens)).fit(fit, held)
    train = pca._standardise(_tokens(fit, "patch")).numpy()
    test = pca._standardise(_tokens(held, "patch")).numpy()
    k = pca.bottleneck
    ref = PCA(n_components=k, svd_solver="full").fit(train)
    ref_mse = float(((ref.inverse_transform(ref.transform(test)) - test) ** 2).mean())
    ours = pca.score(_tokens(held, "patch"))
    assert ours == pytest.approx(ref_mse, rel=1e-3, abs=1e-5)
    np.testing.assert_allclose(np.abs(pca.components_.numpy() @ ref.components_.T),
                               np.eye(k), atol=1e-3)          # the same subspace, same order
    rng = np.random.default_rng(0)
    for _ in range(5):                 # random rank-k maps with their least-squares decoders
        proj = rng.standard_normal((train.shape[1], k))
        codes = train @ proj
        decoder, *_ = np.linalg.lstsq(codes, train, rcond=None)
        assert ((test @ proj @ decoder - test) ** 2).mean() > ours


@pytest.mark.parametrize("kind", ["autoencoder", "pca"])
def test_reconstructions_score_as_the_model_says(logmel, kind):
    fit, held = logmel
    enc = KINDS[kind]("patch", AutoencoderConfig(tokens="shape", **SMALL)).fit(fit, held)
    tokens = _tokens(held[:2], "patch")
    out, mse = enc.reconstruct(tokens)
    assert out.shape == tokens.shape and mse.shape == (tokens.shape[0],)
    assert float(mse.mean()) == pytest.approx(enc.score(tokens), rel=1e-4)
    # back in raw units with each token's level added: without it, standardised, the MSE
    level = tokens.mean(1, keepdim=True)
    again = (((out - level - enc.mean_) / enc.std_ - enc._standardise(tokens)) ** 2).mean(1)
    np.testing.assert_allclose(again.numpy(), mse.numpy(), rtol=1e-3, atol=1e-5)


def test_files_of_either_kind_load_and_others_are_refused(logmel, tmp_path):
    fit, held = logmel
    for kind, cls in KINDS.items():
        enc = cls("thumbnail", AutoencoderConfig(tokens="shape", **SMALL)).fit(fit, held)
        enc.save(tmp_path / f"{kind}.pt")
        back = load_encoder(tmp_path / f"{kind}.pt")
        assert type(back) is cls and back.get_params() == enc.get_params()
        x = _tokens(held, "thumbnail")
        assert torch.equal(back.encode(x), enc.encode(x))
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(ArtifactError, match="not a bow encoder file"):
        load_encoder(tmp_path / "other.pt")
    assert set(FAMILIES) >= {"thumbnail"}


@pytest.mark.parametrize("kind,tokens", [("autoencoder", "raw"), ("autoencoder", "shape"),
                                         ("pca", "shape")])
def test_bf16_encoding_is_close_to_fp32_and_a_function_of_each_token(logmel, kind, tokens):
    """bow.runtime's bf16 on the CPU: codes within 2 % of fp32's largest (the hidden layers'
    bfloat16 activations), a batch equal to its items one by one, fp32 untouched after it."""
    from bow.runtime import encoder_precision
    enc = KINDS[kind]("spectral_envelope", AutoencoderConfig(tokens=tokens, **SMALL))
    enc.fit(*logmel)
    x = _tokens(logmel[1], "spectral_envelope")[:300]
    fp32 = enc.encode(x)
    with encoder_precision("bf16", "cpu"):
        half = enc.encode(x)
        ones = torch.cat([enc.encode(x[i:i + 1]) for i in (0, 17, 299)])
    assert half.dtype == torch.float32 and half.shape == fp32.shape
    scale = float(fp32.abs().max())
    assert float((half - fp32).abs().max()) <= 0.02 * scale
    torch.testing.assert_close(ones, half[[0, 17, 299]], rtol=0, atol=0)
    torch.testing.assert_close(enc.encode(x), fp32, rtol=0, atol=0)


def _split_sum_addmm(real):
    """torch.addmm as a BLAS whose rounding follows the thread count, as MKL's did on the
    machine of issue 23: with more than one torch thread the inner sum is cut in two halves."""
    def addmm(bias, a, b, *, out=None):
        calls.append(torch.get_num_threads())
        k = a.shape[1] // 2
        r = real(bias, a[:, :k], b[:k]) + a[:, k:] @ b[k:] if calls[-1] > 1 else real(bias, a, b)
        return r if out is None else out.copy_(r)
    calls = []
    return addmm, calls


@pytest.mark.parametrize("kind", ["pca", "autoencoder"])
def test_a_token_at_a_tie_between_two_codes_keeps_its_codes_whatever_the_threads(
        logmel, kind, monkeypatch):
    """Issue 23: tokens whose code sits within float32 rounding of a tie between two codes
    (centroids at the code computed with one thread and at the code of the other summation
    order) keep their nearest codes when torch has 2 or 3 threads, with a BLAS that rounds by
    the thread count. The encoder computes on one thread (bow.runtime.one_thread)."""
    from bow.bagofwords.codebook import Codebook, CodebookConfig
    enc = KINDS[kind]("band_envelope", AutoencoderConfig(tokens="shape", **SMALL)).fit(*logmel)
    x = _tokens(logmel[1], "band_envelope")[:256]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = enc.encode(x)
        block = torch.zeros(256, x.shape[1])      # the other order, in encode's 256-row block
        block[:len(x)] = x
        h = block
        for j, (wt, b) in enumerate(enc.folded()):
            k = wt.shape[0] // 2
            h = torch.addmm(b, h[:, :k], wt[:k]) + h[:, k:] @ wt[k:]
            h = h.relu() if j < len(enc.folded()) - 1 else h
        other = h[:len(x)]
        moved = torch.nonzero((one != other).any(1)).ravel()[:64]
        assert len(moved) >= 8                     # the two orders round differently
        book = Codebook(CodebookConfig(n_codes=2 * len(moved)))
        book.centroids_ = torch.cat([one[moved], other[moved]]).numpy()
        want, _ = book.nearest(one[moved].numpy(), 2)
        assert (want[:, 0] == np.arange(len(moved))).all()
        addmm, calls = _split_sum_addmm(torch.addmm)
        monkeypatch.setattr(torch, "addmm", addmm)
        for threads in (2, 3):
            torch.set_num_threads(threads)
            ids, _ = book.nearest(enc.encode(x[moved]).numpy(), 2)
            np.testing.assert_array_equal(ids, want, err_msg=f"{threads} threads")
            assert torch.get_num_threads() == threads
        assert calls and set(calls) == {1}          # encode's matmuls ran, on one thread
    finally:
        torch.set_num_threads(before)

