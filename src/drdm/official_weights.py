"""Importer for the DRDM authors' published PyTorch checkpoint.

The authors' 2D cardiac-MRI checkpoint (``cmr_recresacnet_000000.pth``, Apache-2.0) is a plain
``state_dict`` of 193 tensors. Its architecture, inferred from the key names and shapes and
checked against the authors' reference outputs, is Appendix A's network with these
differences, all expressible as :class:`~drdm.nn.NetworkConfig` fields:

* the frozen sinusoidal embedding has 100 entries (not 80) and frequencies
  ``10000 ** (-4k / 100)``, i.e. ``embed_max_period = 1e8`` in our parameterisation
  (``time_embed.weight``, 80 x 100; it is checked, not copied);
* the projections are ``Linear -> ReLU -> Linear`` (``embed_act_slope = 0``);
* only the encoder and bottleneck ACNN-II blocks have an (affine) instance norm
  (``norm = "encoder"``);
* the decoder concatenates ``[skip, upsampled]`` (our layout too).

Units: the authors' network outputs displacements in fractions of the image size, channel
``i`` along array axis ``i``, clamped to ``±(1 - 1/256)``. Multiplying by the image size
``S`` (256, *not* ``S - 1``) gives voxels in :mod:`drdm.spatial`'s align_corners=True
convention: the two-pass outputs (Eq. 12) of the authors' code are reproduced only with this
factor. Our converted model (``output_units = "image"``) applies exactly this factor, so it
returns voxels; divide by ``S`` to compare with the authors' numbers. The authors' network
takes the 0-based index ``t - 1``; our network takes the 1-based ``t``.

The weights are never shipped with this package; :func:`import_official` reads them from a
file the user has.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .card import ModelCard
from .checkpoint import save_pretrained
from .nn import NetworkConfig, RecursiveUNet, sinusoidal_table

__all__ = [
    "OFFICIAL_EMBED_MAX_PERIOD",
    "convert_official_state_dict",
    "import_official",
    "load_official_state_dict",
    "official_network_config",
]

#: ``10000 ** (-4k / D) == (10000 ** 2) ** (-2k / D)``: the authors' embedding frequencies.
OFFICIAL_EMBED_MAX_PERIOD = 1.0e8

_ENCODER = {"b1": "enc_blocks.0", "b2": "enc_blocks.1", "b3": "enc_blocks.2", "b_mid": "mid_blocks"}
_DECODER = {"b4": "dec_blocks.2", "b5": "dec_blocks.1", "b_out": "dec_blocks.0"}
_TIME = {
    "te1": "enc_time.0",
    "te2": "enc_time.1",
    "te3": "enc_time.2",
    "te_mid": "mid_time",
    "te4": "dec_time.2",
    "te5": "dec_time.1",
    "te_out": "dec_time.0",
}
_PLAIN = {
    "down1": "down.0",
    "down2": "down.1",
    "down3": "down.2",
    "up1": "up.2",
    "up2": "up.1",
    "up3": "up.0",
    "conv_out": "out_conv",
}
_BLOCK_PARTS = {"conv0": "conv_in", "ln": "norm", "convs.0": "conv_mid", "convs.1": "conv_dil"}
_TIME_PARTS = {"0": "fc1", "2": "fc2"}
_EMBED_KEY = "time_embed.weight"
_EMBED_TOLERANCE = 1e-4


def official_network_config(
    num_steps: int = 80, embed_dim: int = 100, in_channels: int = 1, ndim: int = 2
) -> NetworkConfig:
    """The :class:`NetworkConfig` expressing the authors' architecture (see module doc)."""
    return NetworkConfig(
        ndim=ndim,
        in_channels=in_channels,
        widths=(10, 20, 40),
        bottleneck_width=20,
        num_steps=num_steps,
        embed_dim=embed_dim,
        embed_max_period=OFFICIAL_EMBED_MAX_PERIOD,
        embed_act_slope=0.0,
        recursions=2,
        act_slope=1e-6,
        dilation=3,
        norm="encoder",
        norm_eps=1e-5,
        bottleneck_embedding="multiply",
        output_units="image",
        clamp_to_extent=True,
        output_init_std=None,
        warp_padding="zeros",
        compose_padding="border",
    )


def _rename(key: str) -> str | None:
    """Our parameter name for an official key (``None`` for the embedding table)."""
    if key == _EMBED_KEY:
        return None
    m = re.fullmatch(
        r"(b1|b2|b3|b_mid|b4|b5|b_out)\.(\d+)\.(conv0|ln|convs\.0|convs\.1)\.(\w+)", key
    )
    if m:
        stage, idx, part, leaf = m.groups()
        prefix = {**_ENCODER, **_DECODER}[stage]
        return f"{prefix}.{idx}.{_BLOCK_PARTS[part]}.{leaf}"
    m = re.fullmatch(r"(te1|te2|te3|te_mid|te4|te5|te_out)\.([02])\.(weight|bias)", key)
    if m:
        stage, idx, leaf = m.groups()
        return f"{_TIME[stage]}.{_TIME_PARTS[idx]}.{leaf}"
    m = re.fullmatch(r"(down[123]|up[123]|conv_out)\.(weight|bias)", key)
    if m:
        return f"{_PLAIN[m.group(1)]}.{m.group(2)}"
    raise KeyError(f"unexpected key in the official DRDM state_dict: {key!r}")


def _infer_config(state_dict: Mapping[str, Tensor]) -> NetworkConfig:
    try:
        table = state_dict[_EMBED_KEY]
        first = state_dict["b1.0.conv0.weight"]
        widths = tuple(int(state_dict[f"b{i}.0.conv0.weight"].shape[0]) for i in (1, 2, 3))
        bottleneck = int(state_dict["b_mid.0.conv0.weight"].shape[0])
    except KeyError as err:
        raise KeyError(f"not an official DRDM state_dict: missing {err}") from None
    if table.dim() != 2:
        raise ValueError(f"{_EMBED_KEY} must be 2-D (T, D), got {tuple(table.shape)}")
    num_steps, embed_dim = (int(s) for s in table.shape)
    ndim = first.dim() - 2
    base = official_network_config(num_steps, embed_dim, int(first.shape[1]), ndim)
    encoder_norm = all(f"{s}.0.ln.weight" in state_dict for s in _ENCODER)
    decoder_norm = any(f"{s}.0.ln.weight" in state_dict for s in _DECODER)
    if encoder_norm and decoder_norm:
        norm = "all"
    elif encoder_norm:
        norm = "encoder"
    elif not any(k.endswith(".ln.weight") for k in state_dict):
        norm = "none"
    else:
        raise ValueError("official state_dict has instance norms in an unsupported set of blocks")
    cfg = base.to_dict()
    cfg.update(widths=list(widths), bottleneck_width=bottleneck, norm=norm)
    return NetworkConfig.from_dict(cfg)


def convert_official_state_dict(
    state_dict: Mapping[str, Tensor],
) -> tuple[NetworkConfig, dict[str, Tensor]]:
    """Convert the authors' ``state_dict`` to ``(config, state_dict)`` for :class:`RecursiveUNet`.

    The architecture is inferred from the key shapes; the frozen embedding table is verified
    against :func:`drdm.nn.sinusoidal_table` (max abs difference ``<= 1e-4``) and dropped (our
    model recomputes it). Raises ``KeyError``/``ValueError`` on unexpected keys, shapes or
    embedding. Returned tensors are float32 CPU copies.
    """
    config = _infer_config(state_dict)
    table = state_dict[_EMBED_KEY].detach().to("cpu", torch.float64)
    expected = sinusoidal_table(
        config.num_steps, config.embed_dim, config.embed_max_period, dtype=torch.float64
    )
    err = float((table - expected).abs().max())
    if err > _EMBED_TOLERANCE:
        raise ValueError(
            f"{_EMBED_KEY} is not the expected sinusoidal table (max abs difference {err:.3g})"
        )
    converted: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        name = _rename(key)
        if name is not None:
            converted[name] = value.detach().to("cpu", torch.float32).clone().contiguous()
    reference = RecursiveUNet(config).state_dict()
    missing = sorted(set(reference) - set(converted))
    unexpected = sorted(set(converted) - set(reference))
    if missing or unexpected:
        raise ValueError(f"state_dict mismatch: missing {missing}, unexpected {unexpected}")
    for name, value in converted.items():
        if value.shape != reference[name].shape:
            raise ValueError(
                f"shape mismatch for {name}: official {tuple(value.shape)}, "
                f"expected {tuple(reference[name].shape)}"
            )
    return config, converted


def load_official_state_dict(pth_path: str | Path) -> dict[str, Tensor]:
    """Read the authors' ``.pth`` safely (``weights_only=True``) onto the CPU."""
    state = torch.load(Path(pth_path), map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{pth_path} does not hold a plain state_dict of tensors")
    return dict(state)


def import_official(
    pth_path: str | Path,
    out_dir: str | Path,
    extra_config: Mapping[str, Any] | None = None,
    *,
    card: ModelCard | None = None,
) -> Path:
    """Convert the authors' checkpoint into a :mod:`drdm.checkpoint` directory.

    Writes ``model.safetensors`` and ``config.json`` to ``out_dir``; the model card in
    ``config.json`` is ``card`` (e.g. :meth:`ModelCard.official <drdm.card.ModelCard.official>`,
    as ``drdm import-official`` writes it) or the plain dict ``extra_config``, with
    ``source = {"imported_from": "official", ...}`` (file name, SHA-256, licence, units).
    Returns ``out_dir`` as a ``Path``.
    """
    if card is not None and extra_config is not None:
        raise ValueError("give the model card as card= or as extra_config=, not both")
    pth_path = Path(pth_path)
    digest = hashlib.sha256(pth_path.read_bytes()).hexdigest()
    config, converted = convert_official_state_dict(load_official_state_dict(pth_path))
    model = RecursiveUNet(config)
    model.load_state_dict(converted, strict=True)
    extra: dict[str, Any] = card.to_dict() if card is not None else dict(extra_config or {})
    extra["source"] = {
        "imported_from": "official",
        "description": "DRDM authors' published checkpoint, converted by drdm.official_weights",
        "file": pth_path.name,
        "sha256": digest,
        "license": "Apache-2.0",
        "original_units": "fraction of the image size (x S for voxels); 0-based timestep input",
        "converted_units": "voxels; 1-based timestep input",
    }
    return save_pretrained(model, out_dir, extra_config=extra)
