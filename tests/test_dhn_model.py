"""DeepHungarianNet: DeepMOT DHN.pth key compatibility, batching, frozen gradients, bad input."""

from __future__ import annotations

import pytest
import torch

from deepmot.dhn.model import DeepHungarianNet, extract_state_dict

# (name, shape) of DeepMOT's released DHN.pth, as listed in specs/deepmot.md §1.2b.
_GRU_SUFFIXES = ["weight_ih_l{l}", "weight_hh_l{l}", "bias_ih_l{l}", "bias_hh_l{l}"]


def _reference_keys() -> dict[str, tuple[int, ...]]:
    keys: dict[str, tuple[int, ...]] = {}
    for gru, in0 in (("lstm_row", 1), ("lstm_col", 512)):
        for layer in (0, 1):
            for rev in ("", "_reverse"):
                inp = in0 if layer == 0 else 512
                shapes = [(768, inp), (768, 256), (768,), (768,)]
                for suf, shape in zip(_GRU_SUFFIXES, shapes):
                    keys[f"{gru}.{suf.format(l=layer)}{rev}"] = shape
    keys.update({"hidden2tag_1.weight": (256, 512), "hidden2tag_1.bias": (256,),
                 "hidden2tag_2.weight": (64, 256), "hidden2tag_2.bias": (64,),
                 "hidden2tag_3.weight": (1, 64), "hidden2tag_3.bias": (1,)})
    return keys


def _fake_dhn_pth(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: 0.1 * torch.randn(s, generator=g) for k, s in _reference_keys().items()}


def test_default_model_matches_dhn_pth_keys_and_parameter_count():
    ref = _reference_keys()
    assert len(ref) == 38
    sd = DeepHungarianNet().state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == ref
    assert sum(v.numel() for v in sd.values()) == 4_093_825  # spec §1.2


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "module"])
def test_dhn_pth_style_state_dicts_load(tmp_path, wrap):
    sd = _fake_dhn_pth()
    if wrap == "state_dict":
        obj = {"state_dict": sd, "epoch": 3}
    elif wrap == "module":
        obj = {"module." + k: v for k, v in sd.items()}
    else:
        obj = sd
    path = tmp_path / "DHN.pth"
    torch.save(obj, path)
    model = DeepHungarianNet.pretrained(path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert extract_state_dict(obj).keys() == sd.keys()


def _manual_reference(model: DeepHungarianNet, d: torch.Tensor) -> torch.Tensor:
    """Sequence-first, batch-1 reading of spec §1.2, written independently of model.logits."""
    n, m = d.shape
    row = torch.nn.GRU(1, model.config.hidden_size, 2, bidirectional=True)
    col = torch.nn.GRU(2 * model.config.hidden_size, model.config.hidden_size, 2, bidirectional=True)
    row.load_state_dict(model.lstm_row.state_dict())
    col.load_state_dict(model.lstm_col.state_dict())
    x, _ = row(d.reshape(n * m, 1, 1))                       # d11, d12, ..., d1M, d21, ...
    x = x.reshape(n, m, 1, -1).permute(1, 0, 2, 3).reshape(m * n, 1, -1)   # column-major
    x, _ = col(x)
    x = x.reshape(m, n, 1, -1).permute(1, 0, 2, 3).reshape(n * m, -1)
    x = model.hidden2tag_3(model.hidden2tag_2(model.hidden2tag_1(x)))
    return torch.sigmoid(x).reshape(n, m)


def test_forward_follows_row_then_column_reading():
    torch.manual_seed(0)
    model = DeepHungarianNet(hidden_size=8, head_dims=(16, 8)).eval()
    d = torch.rand(3, 5)
    with torch.no_grad():
        assert torch.allclose(model(d), _manual_reference(model, d), atol=1e-6)
        # transposed input is not the same problem: the reading order matters
        assert model(d).shape == (3, 5)


def test_bucketed_batch_equals_per_matrix():
    torch.manual_seed(1)
    model = DeepHungarianNet(hidden_size=16, head_dims=(16, 8), head_activation="relu").eval()
    shapes = [(3, 4), (1, 1), (3, 4), (5, 2), (3, 4), (5, 2), (7, 7)]
    mats = [torch.rand(s) for s in shapes]
    with torch.no_grad():
        batched = model.forward_many(mats, max_batch=2)
        for mat, out in zip(mats, batched):
            assert out.shape == mat.shape
            assert torch.allclose(out, model(mat[None])[0], atol=1e-6)


def test_frozen_dhn_passes_gradient_to_input():
    torch.manual_seed(2)
    model = DeepHungarianNet(hidden_size=8, head_dims=(8, 4), dropout=0.2).double().freeze()
    assert not model.training
    d = torch.rand(2, 3, 4, dtype=torch.float64, requires_grad=True)
    out = model(d)
    out.sum().backward()
    assert d.grad is not None and d.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    x = torch.rand(1, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(model, (x,), eps=1e-6, atol=1e-5)


def test_nan_inf_raise_and_empty_returns_empty():
    model = DeepHungarianNet(hidden_size=8, head_dims=(8, 4))
    for bad in (float("nan"), float("inf")):
        d = torch.rand(2, 3)
        d[1, 2] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            model(d)
    for shape in ((0, 4), (3, 0), (2, 0, 5)):
        out = model(torch.rand(shape))
        assert out.shape == shape
    with pytest.raises(ValueError, match="shape"):
        model(torch.rand(4))


def test_from_config_round_trip_and_bad_config():
    model = DeepHungarianNet(hidden_size=8, head_dims=(8, 4), head_activation="relu")
    clone = DeepHungarianNet.from_config({"hidden_size": 8, "num_layers": 2, "dropout": 0.0,
                                          "head_dims": [8, 4], "head_activation": "relu"})
    clone.load_state_dict(model.state_dict())
    d = torch.rand(4, 3)
    assert torch.allclose(model(d), clone(d))
    with pytest.raises(ValueError):
        DeepHungarianNet.from_config({"hidden": 3})
    with pytest.raises(ValueError):
        DeepHungarianNet(head_activation="tanh")


def test_pretrained_bad_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        DeepHungarianNet.pretrained(tmp_path / "missing.pth")
    wrong = _fake_dhn_pth()
    del wrong["hidden2tag_3.bias"]
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="does not fit"):
        DeepHungarianNet.pretrained(tmp_path / "wrong.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not loadable"):
        DeepHungarianNet.pretrained(tmp_path / "junk.pth")
