"""clmr.marble.CLMREncoder: MARBLE's encoder constants and layer-wise hidden states, from a tiny model file
and from the default released model served by a local mirror."""

import numpy as np
import pytest
import torch
from test_registry import release, server  # noqa: F401  (the local release mirror and its files)

from clmr.errors import ClmrError
from clmr.marble import CLMREncoder


@pytest.fixture(scope="module")
def encoder(tiny_model_file):
    return CLMREncoder(str(tiny_model_file))


def stacked(hidden):
    """What MARBLE's LayerSelector does with all layers: (B, L, T', H)."""
    return torch.stack([hidden[i] for i in range(len(hidden))], dim=1)


def test_constants_describe_the_loaded_model(encoder):
    assert encoder.NAME == "CLMR"
    assert encoder.SAMPLING_RATE == encoder.sample_rate == 8000
    assert encoder.TOKEN_RATE == pytest.approx(8000 / 729) and encoder.NUM_FEATURES == 32
    assert encoder.N_LAYERS == 7  # 5 pooled blocks, the first strided block and the last block


def test_hidden_states_are_pooled_blocks_per_crop(encoder):
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3 * 729 + 100)).astype(np.float32))
    hidden = encoder(x)
    assert len(hidden) == encoder.N_LAYERS and stacked(hidden).shape == (2, 7, 3, 32)
    crops = x[:, : 3 * 729].reshape(6, 729)  # consecutive crops, the remainder dropped
    with torch.no_grad():
        h = encoder.model.embed(crops).reshape(2, 3, 32)
        first = encoder.model.encoder.sequential[0](crops[:, None])  # (6, 2 channels, 243)
    torch.testing.assert_close(hidden[-1], h)  # the last layer is h of each crop
    widths = [b[0].out_channels for b in encoder.model.encoder.sequential]
    torch.testing.assert_close(hidden[0][..., : widths[0]], first.mean(-1).reshape(2, 3, widths[0]))
    assert widths[0] < 32 and torch.all(hidden[0][..., widths[0] :] == 0)  # zero-padded to H
    assert torch.equal(encoder(x[:, None])[3], hidden[3])  # (B, 1, T) is the same
    short = encoder(x[:, :100])  # shorter than a crop: one zero-padded crop
    assert short[-1].shape == (2, 1, 32)
    with torch.no_grad():
        padded = torch.nn.functional.pad(x[:, :100], (0, 629))
        torch.testing.assert_close(short[-1][:, 0], encoder.model.embed(padded))


def test_frozen_by_default_and_fine_tunable(tiny_model_file):
    frozen = CLMREncoder(str(tiny_model_file)).train()  # MARBLE puts the task in training mode
    assert not frozen.model.training and not any(p.requires_grad for p in frozen.parameters())
    before = frozen.model.encoder.sequential[0][1].running_mean.clone()
    x = torch.randn(2, 729)
    assert not frozen(x)[-1].requires_grad
    assert torch.equal(frozen.model.encoder.sequential[0][1].running_mean, before)
    full = CLMREncoder(str(tiny_model_file), train_mode="full").train()
    assert full.model.training
    full(x)[-1].sum().backward()
    assert full.model.encoder.sequential[0][0].weight.grad is not None


def test_bad_input_is_refused(encoder, tiny_model_file):
    with pytest.raises(ClmrError, match="train_mode"):
        CLMREncoder(str(tiny_model_file), train_mode="lora")
    with pytest.raises(ClmrError, match=r"\(B, T\) or \(B, 1, T\), got shape \(2, 2, 729\)"):
        encoder(torch.zeros(2, 2, 729))
    with pytest.raises(ClmrError, match=r"got shape \(2, 0\)"):
        encoder(torch.zeros(2, 0))


def test_no_argument_loads_the_released_model(server):  # noqa: F811
    encoder = CLMREncoder()
    assert (encoder.SAMPLING_RATE, encoder.NUM_FEATURES, encoder.N_LAYERS) == (22050, 512, 11)
    assert encoder.TOKEN_RATE == pytest.approx(22050 / 59049) and encoder.model.tags is not None
    hidden = encoder(torch.randn(1, 59049 + 10))
    assert stacked(hidden).shape == (1, 11, 1, 512)
    assert torch.all(hidden[0][..., 128:] == 0) and hidden[0][..., :128].abs().sum() > 0
