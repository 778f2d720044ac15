"""trtx.sources: model specs, reproducible random models, load_state, state_dict_for_wts, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import wts  # noqa: E402
from netdefs import sources as model_sources  # noqa: E402
from trtx import sources  # noqa: E402
from trtx.sources import SourceError  # noqa: E402


def state_bits(model) -> dict[str, np.ndarray]:
    return {k: v.detach().float().reshape(-1).numpy().view(np.uint32).copy() for k, v in model.state_dict().items()}


def test_spec_errors_are_clear():
    with pytest.raises(SourceError, match="SOURCE:NAME"):
        model_sources.build_model("resnet18")
    with pytest.raises(SourceError, match="torchvision has no model 'resnet19'"):
        model_sources.build_model("torchvision:resnet19")
    with pytest.raises(SourceError, match="yolov5 has no model 'yolov5q'"):
        model_sources.build_model("yolov5:yolov5q")
    with pytest.raises(SourceError, match="not one of mnet, r50"):
        model_sources.build_model("retinaface:r18")


def test_seed_makes_models_reproducible_and_randomizes_norms():
    a = model_sources.build_model("torchvision:resnet18", seed=3)
    b = model_sources.build_model("torchvision:resnet18", seed=3)
    c = model_sources.build_model("torchvision:resnet18", seed=4)
    assert not a.training
    sa, sb, sc = state_bits(a), state_bits(b), state_bits(c)
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert not np.array_equal(sa["conv1.weight"], sc["conv1.weight"])
    assert not np.allclose(a.bn1.running_var.numpy(), 1.0) and not np.allclose(a.bn1.weight.detach().numpy(), 1.0)


def test_retinaface_has_biubug6_key_names():
    model = model_sources.build_model("retinaface:mnet", seed=0)
    keys = list(model.state_dict())
    assert keys[0] == "body.stage1.0.0.weight"
    assert "fpn.output1.0.weight" in keys and "LandmarkHead.2.conv1x1.bias" in keys
    out = model(torch.zeros(1, 3, 64, 64))
    assert [t.shape[-1] for t in out] == [4, 2, 10]


def test_load_state_round_trips_through_a_wts_file(tmp_path):
    model = model_sources.build_model("retinaface:mnet", seed=1)
    wts.save(model_sources.state_dict_for_wts(model, "retinaface:mnet"), tmp_path / "r.wts")
    fresh = model_sources.build_model("retinaface:mnet", seed=2)
    weights = wts.load(tmp_path / "r.wts")
    sources.load_state(fresh, weights)
    assert weights.unused() == []
    a, b = state_bits(model), state_bits(fresh)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert fresh.state_dict()["body.stage1.0.1.num_batches_tracked"].dtype == torch.int64
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for p, q in zip(model(x), fresh(x)):
            assert torch.equal(p, q)


def test_load_state_lists_missing_unexpected_and_wrong_sizes():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    state = model_sources.state_dict_for_wts(model)
    state.pop("0.bias")
    state["0.weight"] = np.zeros(5, np.float32)
    state["extra.thing"] = np.zeros(1, np.float32)
    state["ok.ignored"] = np.zeros(1, np.float32)
    with pytest.raises(SourceError) as info:
        sources.load_state(model, state, ignore=["ok.ignored"])
    message = str(info.value)
    assert "missing: 0.bias" in message and "unexpected: extra.thing" in message
    assert "wrong size: 0.weight (5 values, model needs 6)" in message and "ok.ignored" not in message


def test_yolov5_extras_match_tensorrtx():
    model = model_sources.build_model("yolov5:yolov5n", seed=0)
    state = model_sources.state_dict_for_wts(model, "yolov5:yolov5n")
    keys = list(state)
    i = keys.index("model.24.anchors")
    assert keys[i : i + 3] == ["model.24.anchors", "model.24.anchor_grid", "model.24.strides"]
    assert len(keys) == len(model.state_dict()) + 2
    np.testing.assert_array_equal(state["model.24.strides"], [8, 16, 32])
    # anchor_grid = anchors in pixels, as in the yaml: [10,13, 16,30, 33,23], [30,61, ...], [116,90, ...]
    np.testing.assert_array_equal(state["model.24.anchor_grid"][:6], [10, 13, 16, 30, 33, 23])
    np.testing.assert_array_equal(state["model.24.anchor_grid"][-2:], [373, 326])
    assert state["model.0.bn.num_batches_tracked"].dtype == np.float32


def test_yolov5_cls_and_seg_sources():
    cls = model_sources.build_model("yolov5:yolov5n-cls", seed=0)
    state = model_sources.state_dict_for_wts(cls, "yolov5:yolov5n-cls")
    assert "model.9.linear.weight" in state and not any("anchor" in k for k in state)
    assert tuple(cls(torch.zeros(1, 3, 64, 64)).shape) == (1, 1000)
    seg = model_sources.build_model("yolov5:yolov5n-seg", seed=0)
    state = model_sources.state_dict_for_wts(seg, "yolov5:yolov5n-seg")
    assert "model.24.proto.cv1.conv.weight" in state and "model.24.anchor_grid" in state
    with pytest.raises(SourceError, match="Detect"):
        model_sources.state_dict_for_wts(cls, task="detect")


def test_ultralytics_source():
    model = model_sources.build_model("ultralytics:yolov8n", seed=0)
    assert type(model).__name__ == "DetectionModel" and not model.training
    assert "model.22.dfl.conv.weight" in model.state_dict()


def test_netdef_source(monkeypatch):
    """``netdef:<family>[:arch]`` builds the family's declared source model (NETDEF.torch.source)."""
    import torch

    import netdefs
    from trtx.netdef import Netdef, TorchSide

    def source(arch):
        return torch.nn.Linear(2, 3 if arch is None else int(arch))

    toy = Netdef("toy_source", "toy", configure=None, define=None, torch=TorchSide(model=None, source=source))
    monkeypatch.setattr(netdefs, "FAMILIES", ("toy_source",))
    monkeypatch.setattr(netdefs, "load", lambda family: toy)
    assert model_sources.build_model("netdef:toy_source").out_features == 3
    assert model_sources.build_model("netdef:toy_source:7").out_features == 7


def test_checkpoint_loading(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "sd.pt")
    state = sources.load_checkpoint(tmp_path / "sd.pt")
    assert list(state) == list(model.state_dict())
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    assert list(sources.load_checkpoint(tmp_path / "ckpt.pt")) == list(model.state_dict())
    torch.save({"model": model, "ema": None}, tmp_path / "full.pt")
    with pytest.raises(sources.UnsafePickleError, match="--unsafe-pickle"):
        sources.load_checkpoint(tmp_path / "full.pt")
    loaded = sources.load_checkpoint(tmp_path / "full.pt", unsafe_pickle=True)
    assert isinstance(loaded, torch.nn.Sequential)


def test_torchvision_detection_models_build_without_downloading_a_backbone():
    model = model_sources.build_model("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", seed=0)
    assert type(model).__name__ == "FasterRCNN" and not model.training
