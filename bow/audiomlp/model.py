"""The Audio-MLP autoencoder (Morshed & Ahsan, HEAR 2021, "audiomae"): gated-MLP encoder and
decoder over the 98 frames of a 1 s, 40-band mel spectrogram, an 8-d bottleneck per frame.

    (n, 40, 98) input ─ frames as tokens ─ Linear(40, 64) ─▶ (n, 98, 64)
      ─ 6 x [x + LayerNorm(block(x))] ─▶ (n, 98, 64)      (the blocks of bow.kwmlp.model)
      ─ bottleneck: Linear(64, 8) ─ GELU ─▶ (n, 98, 8)    the timestamp embeddings
    decoder: Linear(8, 64) ─ 6 x [x + LayerNorm(block(x))] ─ LayerNorm(64) ─ Linear(64, 40)
      ─ frames back to (n, 40, 98) ─ Tanh                  the reconstruction

Module names follow the authors' code, so their ``audiomae.pth`` (encoder only: 64 tensors,
213,036 parameters) loads with ``strict=True`` into ``AudioMLPEncoder``: ``to_patch_embed.1``
(index 0 is the frame-to-token rearrangement), ``layers.<i>.fn.norm``,
``layers.<i>.fn.fn.{proj_in.0, sgu.norm, sgu.proj, proj_out}`` (the names of
bow.kwmlp.model.KWMLP, whose block classes are reused) and ``bottleneck.0`` (index 1 is the
activation); the decoder's are ``project``, ``layers``, ``gate.{0, 1}``.

Options of ours (defaults = the authors' architecture): ``bottleneck_act`` "gelu" or "none" (a
linear bottleneck), ``output_act`` "tanh" or "none". Stochastic depth (``prob_survival``, 0.9 in
the authors' code) applies in training only, with bow.kwmlp.model's rule.

Checkpoints (``load_checkpoint`` reads the authors' file and ours alike): a torch file with
``model_state_dict`` (the encoder, the authors' format) and, in ours only, ``input_scaling``
(bow.audiomlp.scaling.InputScaling.state), ``architecture`` ({"bottleneck_act", "output_act"}),
``decoder_state_dict`` and ``config`` (the pretraining settings). The authors' file has only the
first: its input scaling is "power" and its bottleneck GELU. ``FastEncoder`` is the inference
path: bow.kwmlp.model.KWMLPEncoder's time-major trunk, then the bottleneck.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bow.audiomlp.scaling import InputScaling
from bow.io.stage import ArtifactError
from bow.kwmlp.model import (
    FramesToTokens,
    GatedMLPBlock,
    KWMLPEncoder,
    PostNorm,
    Residual,
    surviving_blocks,
)

N_MELS = 40
N_FRAMES = 98
ACTIVATIONS = {"gelu": nn.GELU, "tanh": nn.Tanh, "none": nn.Identity}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


def _stack(depth: int, dim: int, dim_ff: int, seq_len: int) -> nn.ModuleList:
    return nn.ModuleList(Residual(PostNorm(dim, GatedMLPBlock(dim, dim_ff, seq_len)))
                         for _ in range(depth))


def _run(layers: nn.ModuleList, x: torch.Tensor, prob_survival: float, training: bool,
         generator: torch.Generator | None) -> torch.Tensor:
    kept = surviving_blocks(len(layers), prob_survival, generator) if training \
        else range(len(layers))
    for i in kept:
        x = layers[i](x)
    return x


class FramesToBands(nn.Module):
    """(n, 98, 40) -> (n, 40, 98)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class AudioMLPEncoder(nn.Module):
    """(n, 40, 98) scaled spectrogram -> (n, 98, embed_dim) frame embeddings."""

    def __init__(self, depth: int = 6, dim: int = 64, ff_mult: int = 4, embed_dim: int = 8,
                 n_mels: int = N_MELS, n_frames: int = N_FRAMES, prob_survival: float = 0.9,
                 bottleneck_act: str = "gelu"):
        super().__init__()
        self.depth, self.prob_survival, self.bottleneck_act = depth, prob_survival, bottleneck_act
        self.to_patch_embed = nn.Sequential(FramesToTokens(), nn.Linear(n_mels, dim))
        self.layers = _stack(depth, dim, dim * ff_mult, n_frames)
        self.bottleneck = nn.Sequential(nn.Linear(dim, embed_dim), _activation(bottleneck_act))

    @property
    def embed_dim(self) -> int:
        return self.bottleneck[0].out_features

    def forward(self, spec: torch.Tensor, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        x = _run(self.layers, self.to_patch_embed(spec), self.prob_survival, self.training,
                 generator)
        return self.bottleneck(x)

    @classmethod
    def from_state_dict(cls, state_dict: dict, **kwargs) -> "AudioMLPEncoder":
        """An encoder shaped like ``state_dict`` (depth, widths), loaded with strict=True."""
        depth = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("layers."))
        dim, n_mels = state_dict["to_patch_embed.1.weight"].shape
        dim_ff = state_dict["layers.0.fn.fn.proj_in.0.weight"].shape[0]
        n_frames = state_dict["layers.0.fn.fn.sgu.proj.weight"].shape[0]
        embed_dim = state_dict["bottleneck.0.weight"].shape[0]
        model = cls(depth=depth, dim=dim, ff_mult=dim_ff // dim, embed_dim=embed_dim,
                    n_mels=n_mels, n_frames=n_frames, **kwargs)
        model.load_state_dict(state_dict, strict=True)
        return model


class AudioMLPDecoder(nn.Module):
    """(n, 98, embed_dim) frame embeddings -> (n, 40, 98) reconstruction."""

    def __init__(self, depth: int = 6, dim: int = 64, ff_mult: int = 4, embed_dim: int = 8,
                 n_mels: int = N_MELS, n_frames: int = N_FRAMES, prob_survival: float = 0.9,
                 output_act: str = "tanh"):
        super().__init__()
        self.depth, self.prob_survival, self.output_act = depth, prob_survival, output_act
        self.project = nn.Linear(embed_dim, dim)
        self.layers = _stack(depth, dim, dim * ff_mult, n_frames)
        self.gate = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, n_mels), FramesToBands(),
                                  _activation(output_act))

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        return self.gate(_run(self.layers, self.project(z), self.prob_survival, self.training,
                              generator))


class AudioMLPAutoencoder(nn.Module):
    """(n, 40, 98) -> (n, 40, 98): decoder(encoder(x)); ``encoder`` alone gives embeddings."""

    def __init__(self, encoder: AudioMLPEncoder, decoder: AudioMLPDecoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, spec: torch.Tensor, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        return self.decoder(self.encoder(spec, generator), generator)


def n_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class FastEncoder:
    """Inference-only ``AudioMLPEncoder.forward``: (n, 40, 98) -> (n, 98, embed_dim).

    The trunk is bow.kwmlp.model.KWMLPEncoder (time-major; weights copied at construction:
    build it again after the weights change), then the bottleneck as one matmul. Same numbers
    as the module to float rounding (~1e-6 relative).
    """

    def __init__(self, encoder: AudioMLPEncoder):
        self.trunk = KWMLPEncoder(encoder)
        linear, self.act = encoder.bottleneck[0], encoder.bottleneck[1]
        self.weight = linear.weight.detach().t().contiguous()
        self.bias = linear.bias.detach().clone()

    @torch.inference_mode()
    def __call__(self, spec: torch.Tensor) -> torch.Tensor:
        x = self.trunk(spec)                           # (n, 98, 64), a view of (98, n, 64)
        n, t, dim = x.shape
        y = torch.addmm(self.bias, x.transpose(0, 1).reshape(t * n, dim), self.weight)
        return self.act(y).reshape(t, n, -1).transpose(0, 1)


class CheckpointError(ArtifactError):
    """A file that is not an Audio-MLP checkpoint; the message names it."""


def load_checkpoint(path: str | Path, map_location="cpu"
                    ) -> tuple[AudioMLPEncoder, InputScaling]:
    """The encoder (eval mode) and its input scaling from the authors' ``audiomae.pth`` or our
    pretraining's ``best.pth`` (module docstring). Loading is strict: every tensor of
    ``model_state_dict`` is used and every parameter filled; anything else raises
    CheckpointError naming the file."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, OSError...
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt:
        raise CheckpointError(f"{path}: no 'model_state_dict' key (not an Audio-MLP "
                              "checkpoint)")
    try:
        arch = ckpt.get("architecture", {})
        encoder = AudioMLPEncoder.from_state_dict(
            ckpt["model_state_dict"], bottleneck_act=arch.get("bottleneck_act", "gelu")).eval()
    except KeyError as e:
        raise CheckpointError(f"{path}: state dict does not fit the Audio-MLP encoder (no "
                              f"{e} tensor)") from e
    except (RuntimeError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path}: state dict does not fit the Audio-MLP encoder "
                              f"({e})") from e
    try:
        scaling = (InputScaling.from_state(ckpt["input_scaling"]) if "input_scaling" in ckpt
                   else InputScaling("power"))
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path}: its input scaling cannot be read ({e})") from e
    n_mels = encoder.to_patch_embed[1].in_features
    if scaling.mean_.shape[0] != n_mels:
        raise CheckpointError(f"{path}: input scaling for {scaling.mean_.shape[0]} bands, "
                              f"encoder for {n_mels}")
    return encoder, scaling.eval()


def save_checkpoint(path: str | Path, encoder: AudioMLPEncoder,
                    scaling: InputScaling | None = None,
                    decoder: AudioMLPDecoder | None = None, config: dict | None = None) -> None:
    """Write the encoder in the authors' format (``model_state_dict``), with our extra keys
    when given (module docstring); CPU tensors only, no pickled objects."""
    def cpu(module):
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    state = {"model_state_dict": cpu(encoder)}
    if scaling is not None:
        state["input_scaling"] = scaling.state()
    if scaling is not None or decoder is not None or encoder.bottleneck_act != "gelu":
        state["architecture"] = {"bottleneck_act": encoder.bottleneck_act}
        if decoder is not None:
            state["architecture"]["output_act"] = decoder.output_act
    if decoder is not None:
        state["decoder_state_dict"] = cpu(decoder)
    if config is not None:
        state["config"] = config
    with open(path, "wb") as f:   # a file object: the same bytes whatever the file's name
        torch.save(state, f)
