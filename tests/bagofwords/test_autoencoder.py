"""bow.bagofwords.autoencoder: shapes, the folded fast encoder, the random control, resume, early
stopping, files, and a short training on real ESC-10 tokens."""
import pytest
import torch
from torch import nn

from bow.bagofwords.autoencoder import Autoencoder
from bow.bagofwords.corpus import logmel_clips
from bow.bagofwords.encoder import AutoencoderConfig
from bow.bagofwords.model import load_encoder
from bow.bagofwords.tokens import DIMS, FAMILIES, grid
from bow.data.datasets import load_dataset
from tests.conftest import DEVICES

TINY = dict(hidden=32, batch_size=32, steps_per_epoch=3, max_val_tokens=500)


def tiny(**changes) -> AutoencoderConfig:
    """A tiny, fast autoencoder config with ``changes``."""
    return AutoencoderConfig(**{**TINY, **changes})


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread beats two (thread hand-offs dominate), most of all on
    a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def esc10_logmel(esc10_dir):
    """(fit, validation) log-mel of 24 + 4 ESC-10 clips from folds 1-4 (5 chunks each)."""
    clips = [c for c in load_dataset(esc10_dir).clips if c.split in {"1", "2", "3", "4"}]
    picked = clips[::11][:28]  # spread over the classes
    fit, _, _ = logmel_clips(picked[:24])
    val, _, _ = logmel_clips(picked[24:])
    return fit, val


def _weights(ae):
    return [p.detach().clone() for p in ae.encoder_.parameters()] + \
           [p.detach().clone() for p in ae.decoder_.parameters()]


@pytest.mark.parametrize("factor", [10, 20])
def test_shapes_dropout_and_linear_bottleneck(esc10_logmel, factor):
    fit, val = esc10_logmel
    expected = {"patch": 80, "band_envelope": 800, "spectral_envelope": 960, "thumbnail": 80}
    for family in FAMILIES:
        ae = Autoencoder(family, tiny(factor=factor, epochs=0)).fit(fit[:8], val[:2])
        linears = [m for m in ae.encoder_ if isinstance(m, nn.Linear)]
        assert [(m.in_features, m.out_features) for m in linears] == [
            (DIMS[family], 32), (32, 32), (32, expected[family] // factor)]
        assert isinstance(ae.encoder_[-1], nn.Linear)          # no nonlinearity on the codes
        assert [m.p for m in ae.encoder_ if isinstance(m, nn.Dropout)] == [0.5, 0.5]
        dec = [m for m in ae.decoder_ if isinstance(m, nn.Linear)]
        assert [(m.in_features, m.out_features) for m in dec] == [
            (expected[family] // factor, 32), (32, 32), (32, DIMS[family])]
        assert ae.encode(torch.zeros(3, DIMS[family])).shape == (3, expected[family] // factor)


@pytest.mark.parametrize("device", DEVICES)
def test_folded_encode_equals_module_and_batches(esc10_logmel, device):
    fit, val = esc10_logmel
    ae = Autoencoder("spectral_envelope", tiny(epochs=1), device=device).fit(fit, val)
    tokens = grid(fit[:6].float(), "spectral_envelope").reshape(-1, 960)
    ae.encoder_.eval()
    with torch.no_grad():
        ref = ae.encoder_(ae._standardise(tokens))
    fast = ae.encode(tokens)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    # a token's code does not depend on what it is encoded with (fixed-size matmuls)
    one_by_one = torch.cat([ae.encode(tokens[i:i + 1]) for i in range(len(tokens))])
    assert torch.equal(one_by_one, fast)
    assert torch.equal(ae.encode(tokens.flip(0)).flip(0), fast)


def test_random_control_is_the_training_initialisation(esc10_logmel):
    fit, val = esc10_logmel
    random = Autoencoder("patch", tiny(epochs=0)).fit(fit, val)
    frozen = Autoencoder("patch", tiny(epochs=1, lr=0.0)).fit(fit, val)   # steps, no change
    trained = Autoencoder("patch", tiny(epochs=1)).fit(fit, val)
    assert all(torch.equal(a, b) for a, b in zip(_weights(random), _weights(frozen)))
    assert not all(torch.equal(a, b) for a, b in zip(_weights(random), _weights(trained)))
    torch.testing.assert_close(random.mean_, trained.mean_)
    assert random.history_[0]["epoch"] == 0 and len(random.history_) == 1


def test_resume_equals_an_uninterrupted_run(esc10_logmel, tmp_path):
    fit, val = esc10_logmel
    straight = Autoencoder("thumbnail", tiny(epochs=3, patience=9)).fit(fit, val)
    ck = tmp_path / "thumbnail.ckpt"
    Autoencoder("thumbnail", tiny(epochs=1, patience=9), checkpoint=ck).fit(fit, val)
    assert ck.is_file()
    resumed = Autoencoder("thumbnail", tiny(epochs=3, patience=9), checkpoint=ck).fit(fit, val)
    assert all(torch.equal(a, b) for a, b in zip(_weights(straight), _weights(resumed)))
    drop = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert drop(straight.history_) == drop(resumed.history_)
    # another configuration's checkpoint is not resumed: same as a fresh run
    other = Autoencoder("thumbnail", tiny(epochs=1, patience=9, lr=1e-4), checkpoint=ck)
    fresh = Autoencoder("thumbnail", tiny(epochs=1, patience=9, lr=1e-4))
    assert all(torch.equal(a, b) for a, b in zip(_weights(other.fit(fit, val)),
                                                 _weights(fresh.fit(fit, val))))


def test_early_stopping_keeps_the_best_epoch(esc10_logmel):
    fit, val = esc10_logmel
    ae = Autoencoder("patch", tiny(epochs=10, patience=2, lr=0.0)).fit(fit, val)
    assert [h["epoch"] for h in ae.history_] == [0, 1, 2]   # never better than epoch 0
    assert ae.best_epoch_ == 0


def test_save_load_round_trip_without_pickles(esc10_logmel, tmp_path):
    fit, val = esc10_logmel
    ae = Autoencoder("band_envelope", tiny(epochs=1)).fit(fit, val)
    ae.save(tmp_path / "band.pt", meta={"note": "x"})
    blob = torch.load(tmp_path / "band.pt", weights_only=True)   # plain tensors only
    assert blob["format"] == "bow-autoencoder" and blob["params"]["family"] == "band_envelope"
    back = load_encoder(tmp_path / "band.pt")
    tokens = grid(val.float(), "band_envelope").reshape(-1, 800)
    assert torch.equal(back.encode(tokens), ae.encode(tokens))
    assert back.history_ == ae.history_ and back.meta_ == {"note": "x"}
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(Exception):
        load_encoder(tmp_path / "junk.pt")


@pytest.mark.slow
def test_short_training_beats_predicting_the_mean(esc10_logmel):
    """Validation MSE after 150 steps is well below the MSE of predicting the training mean."""
    fit, val = esc10_logmel
    for family in FAMILIES:
        config = AutoencoderConfig(hidden=256, batch_size=128, epochs=3, steps_per_epoch=50,
                                   max_val_tokens=4000)
        ae = Autoencoder(family, config).fit(fit, val)
        tokens = grid(val.float(), family).reshape(-1, DIMS[family])
        baseline = float((((tokens - ae.mean_) / ae.std_) ** 2).mean())   # predict the mean
        mse = ae.score(tokens)
        assert mse < 0.5 * baseline, (family, mse, baseline)
