"""Precision core: TensorRT's entropy calibration checked against its published description, the explicit-INT8
placement rules (shared Q/DQ, residual adds, concatenations, deconvolution), the fp16 policy, exact Q/DQ in the
reference executor, error growth in ``check``, the sensitivity pass behind ``--int8-fallback``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from netdefs import sources as model_sources
from trtx import calibrate, check, quant, reference
from trtx.build import build_serialized
from trtx.net import Net, NetdefError


# ---- entropy calibration -----------------------------------------------------------------------------------
def literal_divergences(bins: np.ndarray, start: int = 128, levels: int = 128) -> np.ndarray:
    """The GTC 2017 pseudocode ("8-bit Inference with TensorRT", entropy calibration), line by line."""
    out = []
    for i in range(start, len(bins)):
        reference_p = np.array(bins[:i], dtype=np.float64)  # take the first i bins
        reference_p[i - 1] += bins[i:].sum()  # outliers_count folded into the last one
        reference_p /= reference_p.sum()
        candidate = np.array(bins[:i], dtype=np.float64)  # quantize bins[0..i-1] into `levels` levels ...
        q = np.zeros(i)
        for level in range(levels):
            members = [j for j in range(i) if j * levels // i == level]
            nonzero = [j for j in members if candidate[j] > 0]
            for j in nonzero:  # ... and expand back to i bins over the nonzero ones
                q[j] = candidate[members].sum() / len(nonzero)
        q /= q.sum()
        kl = 0.0
        for p_j, q_j in zip(reference_p, q):
            if p_j > 0:
                kl = np.inf if q_j == 0 else kl + p_j * np.log(p_j / q_j)
        out.append(kl)
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorized_entropy_equals_the_published_pseudocode(seed):
    rng = np.random.default_rng(seed)
    n = 300
    bins = rng.poisson(rng.exponential(40, n) * np.exp(-np.arange(n) / 70)).astype(np.float64)
    bins[rng.random(n) < 0.15] = 0  # empty bins: P and Q differ in support
    bins[n - 5] = 50  # an outlier cluster
    candidates, fast = quant.entropy_divergences(bins, start=128)
    slow = literal_divergences(bins)
    np.testing.assert_array_equal(candidates, np.arange(128, n))
    np.testing.assert_array_equal(np.isfinite(fast), np.isfinite(slow))
    finite = np.isfinite(slow)
    np.testing.assert_allclose(fast[finite], slow[finite], rtol=1e-9, atol=1e-12)
    assert int(np.argmin(fast)) == int(np.argmin(slow))


def test_slide_example_of_the_expansion():
    """The deck's example: P = [1 0 2 3 5 3 1 7] in 2 levels -> [6, 16] -> Q = [2 0 2 2 4 4 4 4]."""
    bins = np.array([1, 0, 2, 3, 5, 3, 1, 7, 0], dtype=np.float64)  # i = 8 keeps all mass: no outliers
    (i,), (kl,) = quant.entropy_divergences(bins, start=8, levels=2)
    p = np.array([1, 0, 2, 3, 5, 3, 1, 7]) / 22
    q = np.array([2, 0, 2, 2, 4, 4, 4, 4]) / 22
    assert i == 8 and kl == pytest.approx(float(np.sum(p[p > 0] * np.log(p[p > 0] / q[p > 0]))))


def test_entropy_threshold_is_the_chosen_bin_plus_a_half():
    rng = np.random.default_rng(3)
    hist = quant.Histogram()
    hist.add(np.abs(rng.standard_normal(200_000)))
    counts = hist.counts.astype(np.float64)
    counts[0] = counts[1]
    candidates, div = quant.entropy_divergences(counts)
    assert candidates[0] == 128 and candidates[-1] == 2047  # range(128, 2048)
    m = candidates[len(div) - 1 - int(np.argmin(div[::-1]))]
    assert quant.entropy_amax(hist) == pytest.approx((m + 0.5) * hist.width)
    assert 2.5 < quant.entropy_amax(hist) < hist.amax


def test_relu_zero_spike_does_not_pin_the_threshold():
    """Half of a ReLU output is exactly 0. Bin 0 takes bin 1's count (NVIDIA's pytorch-quantization); without
    that the divergence of every wide candidate is dominated by the spike and the smallest ones win."""
    rng = np.random.default_rng(4)
    x = np.maximum(rng.standard_normal(400_000), 0)
    hist = quant.Histogram()
    hist.add(x)
    amax = quant.entropy_amax(hist)
    assert 2.5 < amax <= hist.amax
    candidates, div = quant.entropy_divergences(hist.counts)  # the spike left in place
    pinned = (candidates[int(np.argmin(div))] + 0.5) * hist.width
    assert pinned < 0.5 * amax


def test_histogram_range_doubles_like_tensorrt():
    """2048 bins; a batch beyond the range doubles it (bin pairs merge) as often as needed; counts are kept. As
    TensorRT's developer guide warns, the result depends on the batch order."""
    hist = quant.Histogram()
    hist.add(np.linspace(0, 1, 20481))
    assert hist.width == pytest.approx(1 / 2048) and hist.counts.sum() == 20481
    hist.add(np.array([5.0]))  # 1 -> 2 -> 4 -> 8
    assert len(hist.counts) == 2048 and hist.width == pytest.approx(8 / 2048) and hist.counts.sum() == 20482
    assert hist.counts[256:].sum() == 1  # the old data fills the first eighth; 5.0 lands beyond
    rng = np.random.default_rng(5)
    small, large = np.abs(rng.standard_normal(50_000)), 4 * np.abs(rng.standard_normal(50_000))
    one, other = quant.Histogram(), quant.Histogram()
    for batch in (small, large):
        one.add(batch)
    for batch in (large, small):
        other.add(batch)
    assert one.counts.sum() == other.counts.sum() and one.width != other.width


def test_calibration_is_fast_enough_for_many_tensors():
    import time

    rng = np.random.default_rng(5)
    cal = quant.Calibrator("entropy")
    for k in range(20):
        cal.observe(f"t{k}", np.maximum(rng.standard_normal(100_000), 0) * (k + 1))
    t0 = time.perf_counter()
    amax = cal.amaxes()
    assert time.perf_counter() - t0 < 10.0  # ~50 ms on an idle core: the search is vectorized
    assert all(0 < amax[f"t{k}"] <= cal.histograms[f"t{k}"].amax for k in range(20))


# ---- explicit INT8 placement ----------------------------------------------------------------------------
def _res_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = {
        "stem.weight": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3,
        "stem.bias": rng.standard_normal(8).astype(np.float32) * 0.1,
        "conv1.weight": rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2,
        "conv2.weight": rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3,
        "up.weight": rng.standard_normal((8, 4, 2, 2)).astype(np.float32) * 0.3,  # ConvTranspose2d(8, 4, 2, 2)
        "up.bias": rng.standard_normal(4).astype(np.float32) * 0.1,
        "head.weight": rng.standard_normal((5, 12)).astype(np.float32) * 0.3,
        "head.bias": rng.standard_normal(5).astype(np.float32) * 0.1,
    }
    for bn in ("bn1", "bn2"):
        w[f"{bn}.weight"] = rng.uniform(0.5, 1.5, 8).astype(np.float32)
        w[f"{bn}.bias"] = rng.standard_normal(8).astype(np.float32) * 0.1
        w[f"{bn}.running_mean"] = rng.standard_normal(8).astype(np.float32) * 0.1
        w[f"{bn}.running_var"] = rng.uniform(0.5, 1.5, 8).astype(np.float32)
    return w


def define_res(net: Net) -> None:
    """stem conv+relu -> [conv1 bn1 relu conv2 bn2] + stem (residual) -> relu -> maxpool / deconv -> concat."""
    from netdefs.common import activation, add, concat, conv_bn_act, max_pool

    x = net.input("data", (-1, 3, 16, 16))
    s = activation(net, net.conv(x, "stem", 3, padding=1).get_output(0), "relu", "stem.relu")
    y = conv_bn_act(net, s, conv="conv1", bn="bn1", act="relu1", kernel=3)
    y = conv_bn_act(net, y, conv="conv2", bn="bn2", act=None, kernel=1)
    r = activation(net, add(net, s, y, "block"), "relu", "block.relu")
    up = net.deconv(r, "up", 2, stride=2).get_output(0)  # [B, 4, 32, 32]
    pooled = max_pool(net, up, "up.pool", 2)  # [B, 4, 16, 16]
    cat = concat(net, [pooled, max_pool(net, r, "r.pool", 1)], "cat")  # [B, 12, 16, 16]
    g = net.network.add_reduce(cat, net.trt.ReduceOperation.AVG, (1 << 2) | (1 << 3), False)
    v = net.name(g, "gap").get_output(0)
    logits = net.linear(v, "head").get_output(0)
    prob = net.network.add_softmax(net.to_fp32(logits, "head.to_fp32"))
    prob.axes = 1 << 1
    net.output(net.name(prob, "prob").get_output(0), "prob")


def _res_torch(w: dict[str, np.ndarray], fake_quant=None, fp16: bool = False):
    """The same network in PyTorch; ``fake_quant(name, tensor)`` quantizes the named conv/linear inputs, ``fp16``
    rounds every intermediate tensor to fp16 as an fp16 or int8 network stores them."""
    import torch.nn.functional as F

    t = {k: torch.from_numpy(v) for k, v in w.items()}
    fq = fake_quant or (lambda name, v: v)
    r = (lambda v: v.half().float()) if fp16 else (lambda v: v)

    def bn(x, p):
        scale = t[f"{p}.weight"] / torch.sqrt(t[f"{p}.running_var"] + 1e-5)
        return x * r(scale)[:, None, None] + r(t[f"{p}.bias"] - t[f"{p}.running_mean"] * scale)[:, None, None]

    def forward(x):
        s = r(F.relu(r(F.conv2d(fq("data", r(x)), t["stem.weight"], r(t["stem.bias"]), padding=1))))
        s_q = fq("stem.relu", s)
        y = r(F.relu(r(bn(r(F.conv2d(s_q, t["conv1.weight"], padding=1)), "bn1"))))
        y = r(bn(r(F.conv2d(fq("relu1", y), t["conv2.weight"])), "bn2"))
        res = r(F.relu(r(s_q + y)))
        up = r(F.conv_transpose2d(fq("block.relu", res), t["up.weight"], r(t["up.bias"]), stride=2))
        cat = torch.cat([F.max_pool2d(up, 2), res], 1)
        logits = r(F.linear(fq("gap", r(cat.mean((2, 3)))), t["head.weight"], r(t["head.bias"])))
        return torch.softmax(logits, 1)

    return forward


def _layers(net: Net) -> dict[str, object]:
    from trtx import layers as layer_api

    return {layer.name: layer for layer in layer_api.layers(net.network)}


def test_int8_placement_shares_qdq_and_quantizes_the_residual_input():
    w = _res_weights()
    fp32 = Net(w)
    define_res(fp32)
    # conv/deconv/linear inputs and the residual input of the add fused into conv2 (+bn2): the stem output
    assert fp32.quant_inputs == ["data", "stem.relu", "relu1", "block.relu", "gap"]
    amax = {p: 4.0 for p in fp32.quant_inputs}
    int8 = Net(w, precision="int8", calibration=amax)
    define_res(int8)
    layers = _layers(int8)
    # one Q/DQ pair per tensor: conv1 and the residual add read the same dequantized tensor
    assert sum(name.endswith(".quantize") and not name.endswith("weight.quantize") for name in layers) == 5
    assert layers["conv1"].get_input(0).name == "stem.relu.dequantize"
    assert {layers["block"].get_input(k).name for k in range(2)} == {"stem.relu.dequantize", "bn2"}
    # weights: per output channel, axis 0 for convolution and matmul, axis 1 for deconvolution
    assert layers["conv1.weight.quantize"].axis == 0 and layers["head.weight.quantize"].axis == 0
    assert layers["up.weight.quantize"].axis == 1
    assert tuple(layers["up.weight.scale"].get_output(0).shape) == (4,)
    assert len(build_serialized(int8)) > 10_000  # TensorRT-RTX accepts the Q/DQ network


def test_int8_network_matches_a_pytorch_fake_quant_simulation():
    """The reference executor's Q/DQ = scale, round half to even, clamp -128..127 (TensorRT's definition): the int8
    network equals PyTorch with the same fake quantization, up to the fp16 the int8 network computes in."""
    w = _res_weights(1)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    fp32 = Net(w)
    define_res(fp32)
    feeds = [{"data": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(3)]
    amax = calibrate.collect(define_res, w, feeds, method="minmax")
    int8 = Net(w, precision="int8", calibration=amax)
    define_res(int8)
    got = reference.execute(int8.network, {"data": x})["prob"].double()

    def fq(name, v):
        s = amax[name] / 127
        return torch.clamp(torch.round(v / s), -128, 127) * s

    wq = dict(w)
    for key, axis in (
        ("stem.weight", 0),
        ("conv1.weight", 0),
        ("conv2.weight", 0),
        ("up.weight", 1),
        ("head.weight", 0),
    ):
        s = quant.weight_amax(w[key], axis) / 127
        shape = [1] * w[key].ndim
        shape[axis] = -1
        wq[key] = quant.fake_quantize(w[key].astype(np.float16).astype(np.float32), s.reshape(shape))
    with torch.no_grad():
        want = _res_torch(wq, fq, fp16=True)(torch.from_numpy(x)).double()
        plain = _res_torch(w)(torch.from_numpy(x)).double()
    # equal but for the odd value that fp16 accumulation order moves across a rounding boundary
    assert (got - want).abs().mean() < 0.1 * (plain - want).abs().mean(), ((got - want).abs(), (plain - want).abs())
    assert (got - want).abs().max() < 2e-3


def test_reference_qdq_rounds_half_to_even_and_clamps():
    net = Net({}, precision="int8")
    x = net.network.add_input("x", net.trt.DataType.FLOAT, (9,))
    net.output(net.qdq(x, 0.5, "x"), "y")
    values = np.array([0.25, 0.75, 1.25, -0.25, -0.75, 63.5, 63.75, -64.0, -64.5], np.float32)
    got = reference.execute(net.network, {"x": values})["y"].numpy()
    # x / 0.5 = 0.5, 1.5, 2.5, -0.5, -1.5, 127, 127.5, -128, -129 -> 0, 2, 2, -0, -2, 127, 127, -128, -128
    np.testing.assert_array_equal(got, np.array([0, 2, 2, 0, -2, 127, 127, -128, -128], np.float32) * 0.5)


def define_cat(net: Net) -> None:
    """... r -> deconv -> maxpool -> cat(., maxpool1(r)) -> 1x1 conv: the concat output is quantized."""
    from netdefs.common import activation, add, concat, conv_bn_act, max_pool

    x = net.input("data", (-1, 3, 16, 16))
    s = activation(net, net.conv(x, "stem", 3, padding=1).get_output(0), "relu", "stem.relu")
    y = conv_bn_act(net, s, conv="conv1", bn="bn1", act="relu1", kernel=3)
    y = conv_bn_act(net, y, conv="conv2", bn="bn2", act=None, kernel=1)
    r = activation(net, add(net, s, y, "block"), "relu", "block.relu")
    up = max_pool(net, net.deconv(r, "up", 2, stride=2).get_output(0), "up.pool", 2)
    cat = concat(net, [up, max_pool(net, r, "r.pool", 1)], "cat")
    net.output(net.conv(cat, "mix", 1).get_output(0), "mix")


def test_concatenation_inputs_share_the_output_scale():
    """block.relu is quantized for the deconv and, through a max pool (which commutes with Q), is part of the
    quantized concat: it takes the concat's scale, so TensorRT needs no requantization around the concat."""
    rng = np.random.default_rng(7)
    w = dict(_res_weights(2), **{"mix.weight": rng.standard_normal((5, 12, 1, 1)).astype(np.float32)})
    w["up.weight"] = w["up.weight"] * 4  # the deconv branch has the larger range
    feeds = [{"data": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(2)]
    net = Net(w)
    define_cat(net)
    assert {"cat", "block.relu"} <= set(net.quant_inputs)
    assert calibrate.concat_groups(net.network, net.quant_inputs) == [(["cat"], ["block.relu"])]
    untied = quant.Calibrator("minmax")
    for f in feeds:
        values = reference.execute(net.network, f, keep=net.quant_inputs)
        for p in net.quant_inputs:
            untied.observe(p, values[p])
    amax = calibrate.collect(define_cat, w, feeds, method="minmax")
    assert amax["block.relu"] == amax["cat"] == untied.amax("cat") != untied.amax("block.relu")
    assert amax["stem.relu"] == untied.amax("stem.relu")  # not part of the concat: its own range
    int8 = Net(w, precision="int8", calibration=amax)
    define_cat(int8)
    assert len(build_serialized(int8)) > 10_000
    avg = Net(dict(w, **{"mix16.weight": rng.standard_normal((5, 16, 1, 1)).astype(np.float32)}))
    from netdefs.common import avg_pool, concat  # an average pool does not commute with Q: nothing is tied

    s = avg.conv(avg.input("data", (-1, 3, 16, 16)), "stem", 3, padding=1).get_output(0)
    c = concat(avg, [avg_pool(avg, s, "s.avg", 1), avg.conv(s, "conv1", 3, padding=1).get_output(0)], "cat")
    avg.output(avg.conv(c, "mix16", 1).get_output(0), "out")
    assert {"stem", "cat"} <= set(avg.quant_inputs)
    assert calibrate.concat_groups(avg.network, avg.quant_inputs) == []


# ---- fp16 policy ----------------------------------------------------------------------------------------
def test_fp32_policy_violations_name_the_layer():
    w = _res_weights()

    def define_bad(net: Net) -> None:
        x = net.input("data", (-1, 3, 16, 16))
        y = net.conv(x, "stem", 3, padding=1).get_output(0)
        sm = net.network.add_softmax(y)  # fp16 softmax: against the policy
        net.output(net.name(sm, "sm").get_output(0), "sm")

    bad = Net(w, precision="fp16")
    define_bad(bad)
    (line,) = bad.fp32_policy_violations()
    assert "'sm' (SOFTMAX)" in line and "net.to_fp32" in line
    good = Net(w, precision="fp16")
    define_res(good)
    assert good.fp32_policy_violations() == []


def test_fp16_io_casts_and_weights_follow_the_layer_dtype():
    w = _res_weights()
    net = Net(w, precision="fp16")
    x = net.input("data", (-1, 3, 16, 16))
    assert x.dtype == net.trt.DataType.HALF and net.network.get_input(0).dtype == net.trt.DataType.FLOAT
    y = net.conv(x, "stem", 3, padding=1).get_output(0)
    island = net.batchnorm(net.to_fp32(net.conv(y, "conv1", 3, padding=1).get_output(0)), "bn1")
    assert island.get_output(0).dtype == net.trt.DataType.FLOAT  # batch norm in an fp32 island: fp32 weights
    net.output(island.get_output(0), "out")
    assert net.network.get_output(0).dtype == net.trt.DataType.FLOAT
    assert len(build_serialized(net)) > 1_000
    io16 = Net(w, precision="fp16", io_dtype="fp16")
    io16.output(io16.conv(io16.input("data", (-1, 3, 16, 16)), "stem", 3).get_output(0), "out")
    assert io16.network.get_input(0).dtype == io16.network.get_output(0).dtype == io16.trt.DataType.HALF


def test_fp16_weight_overflow_is_a_clear_error():
    w = _res_weights()
    w["stem.weight"][0, 0, 0, 0] = 1e6
    net = Net(w, precision="fp16")
    with pytest.raises(NetdefError, match=r"stem.weight.*overflow fp16"):
        net.conv(net.input("data", (-1, 3, 16, 16)), "stem", 3)
    fp32 = Net(w)
    fp32.conv(fp32.input("data", (-1, 3, 16, 16)), "stem", 3)  # fine in fp32


# ---- check: error growth -------------------------------------------------------------------------------
def test_check_reports_error_growth_per_unit():
    w = _res_weights(3)
    rng = np.random.default_rng(8)
    feeds = [{"data": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(2)]
    amax = calibrate.collect(define_res, w, feeds)
    model = _TorchRes(w)
    for precision in ("fp16", "int8"):
        net = Net(w, precision=precision, calibration=amax)
        define_res(net)
        result = check.compare(net, model, feeds[0], forward=lambda m, f: {"prob": m(f["data"])}, precision=precision)
        assert result.passed, result.table()
        rows = {r.name: r for r in result.layers}
        assert rows["bn2"].unit == "conv2" and rows["conv2"].unit == "conv2"  # conv + batch norm: one unit
        assert rows["conv1"].upstream == "stem" and rows["conv1"].rms_rel_err > 0  # stem.relu is no module
        growth = result.largest_growth()
        assert growth and all(r.growth > 1 for r in growth)
        assert len({r.unit for r in growth}) == len(growth)  # one row per unit
        table = result.table()
        assert f"error growth ({precision})" in table and table.splitlines()[-1].startswith("PASSED")
        doc = json.loads(json.dumps(result.to_json(), allow_nan=False))
        assert doc["precision"] == precision and "growth" in doc["layers"][0] and "rms_rel_err" in doc["layers"][0]


class _TorchRes(torch.nn.Module):
    """The residual test network as an nn.Module whose module paths match the layer names."""

    def __init__(self, w: dict[str, np.ndarray]) -> None:
        super().__init__()
        nn = torch.nn
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.head = nn.Linear(12, 5)
        self.load_state_dict({k: torch.from_numpy(v) for k, v in w.items()}, strict=False)
        self.eval()

    def forward(self, x):
        import torch.nn.functional as F

        s = F.relu(self.stem(x))
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(s)))))
        r = F.relu(s + y)
        cat = torch.cat([F.max_pool2d(self.up(r), 2), r], 1)
        return torch.softmax(self.head(cat.mean((2, 3))), 1)


# ---- sensitivity and fallback -----------------------------------------------------------------------------
def test_sensitivity_ranks_tensors_and_fallback_removes_their_qdq():
    w = _res_weights(4)
    rng = np.random.default_rng(9)
    feeds = [{"data": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(2)]
    amax = calibrate.collect(define_res, w, feeds)
    amax["relu1"] /= 50  # clip relu1 hard: the most sensitive tensor by far
    sens = calibrate.sensitivity(define_res, w, amax, feeds)
    assert set(sens) == {"data", "stem.relu", "relu1", "block.relu", "gap"} and all(v > 0 for v in sens.values())
    assert calibrate.most_sensitive(sens, 1) == ["relu1"]
    net = Net(w, precision="int8", calibration=amax, int8_fallback=["relu1"])
    define_res(net)
    layers = _layers(net)
    assert "relu1.quantize" not in layers and "conv2.weight.quantize" not in layers  # conv2 runs in fp16
    assert layers["conv2"].get_input(0).name == "relu1" and "conv1.weight.quantize" in layers
    assert len(build_serialized(net)) > 10_000


def _torchvision_weights(arch: str) -> dict[str, np.ndarray]:
    from netdefs import imagenet

    torch.manual_seed(0)
    return {k: v.detach().numpy() for k, v in imagenet.torchvision_model(arch).state_dict().items()}


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "mobilenet_v2"])
def test_residual_adds_of_the_classic_netdefs(arch):
    """ResNet: the add fuses into conv2/conv3 (+bn); the shortcut -- the block input, or the downsample -- is
    quantized, the block input with the Q/DQ conv1 reads. MobileNetV2: the block input is quantized (the same
    Q/DQ as the expand conv's input), the projection (+bn) output is the fused side."""
    import argparse

    from netdefs import mobilenet, resnet

    nd = mobilenet if arch.startswith("mobilenet") else resnet
    w = _torchvision_weights(arch)
    cfg = nd.configure(argparse.Namespace(arch=arch), w)
    fp32 = Net(w)
    nd.define(fp32, cfg)
    int8 = Net(w, precision="int8", calibration={p: 3.0 for p in fp32.quant_inputs})
    nd.define(int8, cfg)
    layers = _layers(int8)
    adds = [layer for name, layer in layers.items() if name.endswith(".add") or name in ("features.3", "features.5")]
    assert adds
    for add in adds:
        first, second = (add.get_input(k).name for k in range(2))
        if arch.startswith("resnet"):
            block = add.name[: -len(".add")]
            assert first == (f"{block}.bn3" if arch == "resnet50" else f"{block}.bn2")
            assert second.endswith(".dequantize")
            if "downsample" not in second:  # the block input: the same Q/DQ conv1 reads
                assert layers[f"{block}.conv1"].get_input(0).name == second
        else:
            assert first.endswith(".dequantize") and second == f"{add.name}.conv"
            assert layers[f"{add.name}.conv.0.0"].get_input(0).name == first
    if arch == "resnet18":
        assert len(build_serialized(int8)) > 1_000_000


def test_cache_keeps_the_sensitivity_and_notices_a_changed_network(tmp_path, capsys, make_calibration_folder):
    """--int8-fallback: the sensitivity is computed once and cached with the ranges; a cache that lacks a
    tensor of the network (the netdef changed) is recalibrated with a message, or refused without images."""
    import argparse

    import wts
    from netdefs import lenet

    weights_path = tmp_path / "lenet.wts"
    wts.save(
        model_sources.state_dict_for_wts(model_sources.build_model("netdef:lenet", seed=3), "netdef:lenet"),
        weights_path,
    )
    w = wts.load(weights_path)
    cfg = lenet.configure(argparse.Namespace(arch="lenet5"), w)
    images = make_calibration_folder(tmp_path)
    cache = tmp_path / "calib.json"
    args = dict(calib=str(images), cache=str(cache))
    first = calibrate.for_netdef(lenet.NETDEF, cfg, w, str(weights_path), fallback=2, **args)
    assert len(first.fallback) == 2 and set(first.sensitivity) == set(first)
    assert json.loads(cache.read_text())["sensitivity"] == pytest.approx(first.sensitivity)
    again = calibrate.for_netdef(lenet.NETDEF, cfg, w, str(weights_path), calib=None, cache=str(cache), fallback=3)
    assert again == pytest.approx(dict(first)) and again.fallback[:2] == first.fallback  # no images needed
    doc = json.loads(cache.read_text())
    del doc["amax"]["relu4"]
    cache.write_text(json.dumps(doc))
    with pytest.raises(quant.CalibrationError, match=r"no range for 1 tensor\(s\) of this network \(relu4\)"):
        calibrate.for_netdef(lenet.NETDEF, cfg, w, str(weights_path), calib=None, cache=str(cache))
    capsys.readouterr()
    redone = calibrate.for_netdef(lenet.NETDEF, cfg, w, str(weights_path), **args)
    assert "recalibrating" in capsys.readouterr().err and "relu4" in redone


def test_cli_int8_fallback_metadata_and_fp32_policy_warning(tmp_path, capsys, make_calibration_folder):
    from pathlib import Path

    import wts
    from trtx import cli
    from trtx.netdef import App, Netdef

    weights_path = tmp_path / "tiny.wts"
    wts.save({k: v.reshape(-1) for k, v in _res_weights().items()}, weights_path)

    def preprocess(images, cfg):
        return {"data": np.ones((1, 3, 16, 16), np.float32) * images[0].mean() / 64}, None

    def define(net: Net, cfg) -> None:
        x = net.input("data", (-1, 3, 16, 16))
        y = net.conv(x, "stem", 3, padding=1).get_output(0)
        y = net.conv(y, "conv1", 3, padding=1).get_output(0)
        sm = net.network.add_softmax(y)  # no net.to_fp32: against the policy
        sm.axes = 1 << 1
        net.output(net.name(sm, "sm").get_output(0), "sm")

    nd = Netdef("tiny", "tiny", configure=lambda args, weights, meta: None, define=define,
                app=App(preprocess, postprocess=lambda outputs, ctx, cfg: []))  # fmt: skip
    images = make_calibration_folder(tmp_path)
    engine = tmp_path / "tiny.engine"
    argv = ["build", "-w", str(weights_path), "-o", str(engine), "--precision", "int8", "--calib", str(images)]
    assert cli.main(nd, [*argv, "--int8-fallback", "1"]) == 0
    err = capsys.readouterr().err
    assert "warning: layer 'sm' (SOFTMAX) computes in fp16" in err and "stay fp16" in err
    meta = json.loads(Path(f"{engine}.json").read_text())
    assert meta["int8"]["quantized_tensors"] == 1 and len(meta["int8"]["fp16_fallback"]) == 1
    assert cli.main(nd, ["build", "-w", str(weights_path), "-o", str(engine)]) == 0  # fp32: no policy to keep
    assert "computes in fp16" not in capsys.readouterr().err
