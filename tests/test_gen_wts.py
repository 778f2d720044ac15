"""gen_wts.py: reproducible random models, tensorrtx-identical output, checkpoints, refusal of pickles."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gen_wts  # noqa: E402
import wts  # noqa: E402
from netdefs import sources as model_sources  # noqa: E402
from trtx import sources  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, str(ROOT / "gen_wts.py"), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def tensorrtx_gen_wts(model, path: Path, m_type: str = "detect") -> None:
    """What tensorrtx's yolov5/gen_wts.py does to a loaded model, then its per-value writer."""
    if m_type in ("detect", "seg"):
        detect = model.model[-1]
        anchor_grid = detect.anchors * detect.stride[..., None, None]
        delattr(detect, "anchor_grid")
        detect.register_buffer("anchor_grid", anchor_grid)
        detect.register_buffer("strides", detect.stride)
    with open(path, "w") as f:
        f.write(f"{len(model.state_dict().keys())}\n")
        for k, v in model.state_dict().items():
            vr = v.reshape(-1).cpu().numpy()
            f.write(f"{k} {len(vr)}")
            for vv in vr:
                f.write(" ")
                f.write(struct.pack(">f", float(vv)).hex())
            f.write("\n")


@pytest.mark.slow
def test_yolov5s_random_init_is_reproducible_and_reloads_exactly(tmp_path):
    # one run in a fresh process, one in this one: same seed, same bytes
    child = run_cli("--model", "yolov5:yolov5s", "--random-init", "--seed", "0", "-o", "y0.wts", cwd=tmp_path)
    assert (
        gen_wts.main(["--model", "yolov5:yolov5s", "--random-init", "--seed", "0", "-o", str(tmp_path / "y1.wts")]) == 0
    )
    out, err = child.communicate(timeout=900)
    assert child.returncode == 0, err
    assert "351 tensors" in out and "7,235,389 parameters" in out and "MiB" in out
    first, second = (tmp_path / "y0.wts").read_bytes(), (tmp_path / "y1.wts").read_bytes()
    assert first == second and first.startswith(b"351\n")

    reference = model_sources.build_model("yolov5:yolov5s", seed=0)
    reloaded = model_sources.build_model("yolov5:yolov5s", seed=123)
    weights = wts.load(tmp_path / "y0.wts")
    sources.load_state(reloaded, weights, ignore=["model.24.anchor_grid", "model.24.strides"])
    assert weights.unused() == ["model.24.anchor_grid", "model.24.strides"]
    x = torch.rand(2, 3, 128, 96)
    with torch.no_grad():
        expected, got = reference(x)[0], reloaded(x)[0]
    assert torch.equal(expected, got)


def test_output_is_byte_identical_to_tensorrtx_gen_wts(tmp_path):
    for name in ("a.wts", "b.wts"):
        argv = ["--model", "yolov5:yolov5n", "--random-init", "--seed", "5", "-o", str(tmp_path / name), "-q"]
        assert gen_wts.main(argv) == 0
    tensorrtx_gen_wts(model_sources.build_model("yolov5:yolov5n", seed=5), tmp_path / "ref.wts")
    reference = (tmp_path / "ref.wts").read_bytes()
    assert (tmp_path / "a.wts").read_bytes() == reference == (tmp_path / "b.wts").read_bytes()


def test_pickled_model_needs_unsafe_pickle(tmp_path, capsys):
    model = model_sources.build_model("yolov5:yolov5n", seed=7)
    torch.save({"model": model.half(), "ema": None, "epoch": 1}, tmp_path / "full.pt")  # like yolov5 checkpoints
    out = tmp_path / "out.wts"
    with pytest.raises(SystemExit) as info:
        sys.exit(gen_wts.main(["-w", str(tmp_path / "full.pt"), "-o", str(out)]))
    assert info.value.code != 0
    assert "--unsafe-pickle" in capsys.readouterr().err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["full.pt"]

    assert gen_wts.main(["-w", str(tmp_path / "full.pt"), "-o", str(out), "--unsafe-pickle", "-q"]) == 0
    expected = model_sources.state_dict_for_wts(model_sources.build_model("yolov5:yolov5n", seed=7).half().float())
    loaded = wts.load(out)
    assert list(loaded) == list(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)


def test_pickled_checkpoint_refused_in_a_subprocess(tmp_path):
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "full.pt")
    p = run_cli("-w", "full.pt", "-o", "x.wts", cwd=tmp_path)
    out, err = p.communicate(timeout=300)
    assert p.returncode != 0 and "--unsafe-pickle" in err
    assert not (tmp_path / "x.wts").exists()


def test_state_dict_checkpoint_keeps_every_key(tmp_path):
    model = model_sources.build_model("retinaface:mnet", seed=1)
    state = model.state_dict()
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "mnet.pth")
    assert gen_wts.main(["-w", str(tmp_path / "mnet.pth"), "-q"]) == 0
    loaded = wts.load(tmp_path / "mnet.wts")  # default output: CKPT with .wts
    assert list(loaded) == list(state)
    nbt = "body.stage1.0.1.num_batches_tracked"
    assert loaded[nbt].dtype == np.float32 and loaded[nbt].tolist() == [float(state[nbt])]
    for name, value in state.items():
        np.testing.assert_array_equal(loaded[name], value.float().reshape(-1).numpy())


def test_weights_into_model_and_mismatch(tmp_path, capsys):
    model = model_sources.build_model("retinaface:mnet", seed=2)
    torch.save(model.state_dict(), tmp_path / "mnet.pth")
    out = tmp_path / "m.safetensors"
    assert gen_wts.main(["-w", str(tmp_path / "mnet.pth"), "--model", "retinaface:mnet", "-o", str(out)]) == 0
    assert "300 tensors" in capsys.readouterr().out
    loaded = wts.load(out)
    np.testing.assert_array_equal(loaded["fpn.output1.0.weight"], model.fpn.output1[0].weight.reshape(-1).detach())

    assert (
        gen_wts.main(
            ["-w", str(tmp_path / "mnet.pth"), "--model", "torchvision:resnet18", "-o", str(tmp_path / "bad.wts")]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "missing: conv1.weight" in err and "unexpected: body.stage1.0.0.weight" in err
    assert not (tmp_path / "bad.wts").exists()


def test_yolov5_types(tmp_path):
    base = ["--model", "yolov5:yolov5n", "--random-init", "-q"]
    assert gen_wts.main([*base, "-o", str(tmp_path / "d.wts")]) == 0
    assert gen_wts.main([*base, "--type", "cls", "-o", str(tmp_path / "c.wts")]) == 0
    assert "model.24.anchor_grid" in wts.load(tmp_path / "d.wts")
    assert "model.24.anchor_grid" not in wts.load(tmp_path / "c.wts")
    cls = tmp_path / "cls.wts"
    assert gen_wts.main(["--model", "yolov5:yolov5n-cls", "--random-init", "-q", "-o", str(cls)]) == 0
    assert "model.9.linear.weight" in wts.load(cls)
    assert (
        gen_wts.main(
            ["--model", "yolov5:yolov5n-cls", "--random-init", "-q", "--type", "detect", "-o", str(tmp_path / "x.wts")]
        )
        == 2
    )
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "sd.pt")
    assert gen_wts.main(["-w", str(tmp_path / "sd.pt"), "--type", "seg", "-o", str(tmp_path / "y.wts")]) == 2
    assert not (tmp_path / "x.wts").exists() and not (tmp_path / "y.wts").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "give -w CKPT"),
        (["--model", "yolov5:yolov5n"], "--random-init is required"),
        (["--random-init"], "--random-init needs --model"),
        (["--model", "yolov5:yolov5n", "-w", "x.pt", "--seed", "1"], "--seed only applies"),
        (["-w", "missing.pt"], "does not exist"),
    ],
)
def test_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        gen_wts.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        gen_wts.main(["--help"])
    text = capsys.readouterr().out
    for option in ("--weights", "--output", "--model", "--random-init", "--seed", "--type", "--unsafe-pickle"):
        assert option in text
