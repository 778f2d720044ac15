"""netdefs/detection, the toolkit every detector shares: box math, the host NMS rule, TensorRT's NMS layer wired
by it (run by the reference executor), the post-NMS comparison under near-tied scores, drawing and JSON."""

from __future__ import annotations

import numpy as np
import pytest

from netdefs.detection import boxes as bx
from netdefs.detection import draw, results
from netdefs.detection.boxes import Detections
from netdefs.detection.compare import Tolerance, compare_detections, compare_topk
from netdefs.detection.nms import NmsRule, gather_selected, nms_layer, unpack_selected
from trtx import nms as exact


def crowd(seed: int, n: int = 400, classes: int = 3, tied: bool = True) -> Detections:
    """Overlapping boxes in a few clusters; with ``tied``, scores on a coarse grid (many exact ties) like the
    scores of untrained weights."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(40, 600, (6, 2))
    c = centres[rng.integers(0, 6, n)] + rng.normal(0, 12, (n, 2))
    wh = rng.uniform(20, 80, (n, 2))
    scores = rng.uniform(0.3, 0.6, n)
    if tied:
        scores = np.round(scores, 3)
    return Detections(np.concatenate([c - wh / 2, c + wh / 2], 1), scores, rng.integers(0, classes, n))


def jitter(d: Detections, seed: int, box: float, score: float) -> Detections:
    """The same candidates as another computation gives them: every value moved by up to ``box`` / ``score``."""
    rng = np.random.default_rng(seed)
    return Detections(d.boxes + rng.uniform(-box, box, d.boxes.shape), d.scores + rng.uniform(-score, score, len(d)),
                      d.classes, {k: v + rng.uniform(-box, box, v.shape) for k, v in d.extras.items()})  # fmt: skip


RULE = NmsRule(conf=0.35, iou=0.45, max_det=60, max_candidates=300)


def test_boxes_convert_and_iou_equals_torchvision():
    import torch
    from torchvision.ops import box_iou

    d = crowd(0, 50)
    np.testing.assert_allclose(bx.xywh2xyxy(bx.xyxy2xywh(d.boxes)), d.boxes, atol=1e-4)
    expected = box_iou(torch.from_numpy(d.boxes), torch.from_numpy(d.boxes[:7])).numpy()
    np.testing.assert_allclose(bx.box_iou(d.boxes, d.boxes[:7]), expected, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_iou_bounds_hold_every_perturbation(seed):
    """The IoU of boxes moved by up to d lies within iou_bounds(d), and the bounds are not vacuous."""
    d = crowd(seed, 60)
    low, high = bx.iou_bounds(d.boxes, d.boxes, 0.05)
    rng = np.random.default_rng(seed)
    for _ in range(20):
        moved = d.boxes + rng.uniform(-0.05, 0.05, d.boxes.shape)
        iou = bx.box_iou(moved, moved)
        assert (iou >= low - 1e-6).all() and (iou <= high + 1e-6).all()
    exact_iou = bx.box_iou(d.boxes, d.boxes)
    assert (low <= exact_iou + 1e-6).all() and (exact_iou <= high + 1e-6).all()
    assert ((high - low)[exact_iou > 0.1] < 0.05).all()


def test_rule_select_is_trtx_nms():
    d = crowd(1)
    kept = RULE.select(d)
    expected = exact.non_max_suppression(d.boxes, d.scores, d.classes, conf_threshold=0.35, iou_threshold=0.45,
                                         max_det=60, max_nms=300, class_offset=None)  # fmt: skip
    assert np.array_equal(kept, expected) and len(kept) > 20
    aware, agnostic = NmsRule(0.35, 0.45, 500).select(d), NmsRule(0.35, 0.45, 500, class_aware=False).select(d)
    assert len(agnostic) < len(aware)


# ---- the comparison -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_near_ties_pass_and_change_the_kept_set(seed):
    """Candidates computed twice (values moved within tolerance): each side's own NMS keeps different boxes
    (the near-ties fall otherwise), yet ours is a greedy NMS of theirs: passed; a one-for-one comparison of the two
    kept sets would fail."""
    theirs = crowd(seed)
    ours = RULE.detect([jitter(theirs, seed + 100, box=1e-3, score=2e-6)])
    own = RULE.select(theirs)
    passed, message = compare_detections(ours, [theirs], RULE, Tolerance(box=2e-3, score=5e-6))
    assert passed, message
    assert "a greedy NMS of PyTorch's candidates" in message
    if seed < 3:  # (asserted for a few seeds: the ties really change the selection)
        assert not np.array_equal(ours[0].index, own), "the test needs near-ties that change the kept set"


def test_identical_candidates_say_identical():
    theirs = crowd(7, tied=False)
    passed, message = compare_detections(RULE.detect([theirs]), [theirs], RULE, 1e-4)
    assert passed and message.startswith(f"{len(RULE.select(theirs))} identical") and "differ" not in message


@pytest.mark.parametrize("index", [True, False])
def test_a_moved_box_fails(index):
    """A box moved past the tolerance (a broken layer) is no PyTorch candidate: failed, naming it."""
    theirs = crowd(3)
    ours = RULE.detect([theirs])[0]
    ours.boxes[5, 2] += 0.5
    if not index:
        ours.index = None
    passed, message = compare_detections([ours], [theirs], RULE, Tolerance(box=1e-2, score=1e-5))
    assert not passed and ("differs from PyTorch's candidate" in message or "is no PyTorch candidate" in message)


def test_a_score_off_by_more_than_a_near_tie_fails():
    theirs = crowd(4)
    ours = jitter(theirs, 1, box=0, score=0)
    ours.scores[np.argsort(-ours.scores)[:40:3]] -= 0.05  # some strong candidates scored lower: NMS keeps others
    passed, message = compare_detections(RULE.detect([ours]), [theirs], RULE, Tolerance(box=1e-2, score=1e-5))
    assert not passed and "score by" in message


def test_a_missing_or_an_extra_detection_fails():
    theirs = crowd(5)
    kept = RULE.detect([theirs])[0]
    missing = kept.take(np.arange(1, len(kept)))
    passed, message = compare_detections([missing], [theirs], RULE, 1e-4)
    assert not passed and "is neither detected nor suppressed" in message
    suppressed = np.setdiff1d(np.nonzero(theirs.scores > RULE.conf)[0], kept.index)
    extra = theirs.take(np.concatenate([kept.index[:-1], suppressed[:1]]))  # one a kept box suppresses
    passed, message = compare_detections([extra], [theirs], RULE, 1e-4)
    assert not passed and ("overlap by IoU" in message or "neither detected" in message)


def test_max_det_cut_and_class_near_tie():
    """Past a full max_det the candidates need not be suppressed; a box whose two best classes tie within tolerance
    may carry either class (class_scores)."""
    theirs = crowd(6)
    rule = NmsRule(conf=0.35, iou=0.45, max_det=10)
    kept = rule.detect([theirs])[0]
    assert len(kept) == 10
    assert compare_detections([kept], [theirs], rule, 1e-4)[0]
    flipped = kept.take(np.arange(len(kept)))
    flipped.classes[0] = (flipped.classes[0] + 1) % 3
    assert not compare_detections([flipped], [theirs], rule, 1e-4)[0]
    scores = np.zeros((len(theirs), 3), np.float32)
    scores[np.arange(len(theirs)), theirs.classes] = theirs.scores
    scores[kept.index[0], flipped.classes[0]] = theirs.scores[kept.index[0]]  # an exact tie between two classes
    theirs.class_scores = scores
    passed, message = compare_detections([flipped], [theirs], rule, 1e-4)
    assert passed, message


def test_extras_are_compared():
    theirs = crowd(8)
    theirs.extras["landmarks"] = np.random.default_rng(0).uniform(0, 600, (len(theirs), 10)).astype(np.float32)
    ours = RULE.detect([theirs])[0]
    assert compare_detections([ours], [theirs], RULE, 1e-4)[0]
    ours.extras["landmarks"][3, 4] += 1.0
    passed, message = compare_detections([ours], [theirs], RULE, 1e-4)
    assert not passed and "landmarks by" in message


# ---- the top-k of an end-to-end (NMS-free) detector ---------------------------------------------------------------
def pairs(seed: int, n: int = 300, classes: int = 4) -> Detections:
    """Candidates with every class's score, on a coarse grid (many exact ties, like untrained scores)."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 600, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 80, (n, 2))], 1).astype(np.float32)
    class_scores = np.round(rng.uniform(0.2, 0.6, (n, classes)), 3).astype(np.float32)
    return Detections(boxes, class_scores.max(1), class_scores.argmax(1), {}, np.arange(n), class_scores)


def topk_of(t: Detections, k: int, conf: float, tie_seed: int | None = None, index: bool = True) -> Detections:
    """An end-to-end head's selection over t's (candidate, class) pairs: the best k, those above conf; ties in
    the order ``tie_seed`` shuffles them to (None: by pair index)."""
    flat, nc = t.class_scores.reshape(-1), t.class_scores.shape[1]
    perm = np.arange(flat.size) if tie_seed is None else np.random.default_rng(tie_seed).permutation(flat.size)
    best = perm[np.argsort(-flat[perm].astype(np.float64), kind="stable")][:k]
    best = best[flat[best] > np.float32(conf)]
    return Detections(t.boxes[best // nc], flat[best], best % nc, {}, best // nc if index else None)


@pytest.mark.parametrize("seed", range(4))
def test_topk_near_ties_pass_and_change_the_selection(seed):
    """Ties broken another way change which pairs make the k cut; any such top-k passes, with and without the
    candidate index (ultralytics' own rows carry none)."""
    theirs = pairs(seed)
    ours = topk_of(theirs, 40, 0.3, tie_seed=seed)
    passed, message = compare_topk([ours], [theirs], 40, 0.3, 1e-4)
    assert passed and "a top-40 of PyTorch's (candidate, class) pairs" in message, message
    assert compare_topk([topk_of(theirs, 40, 0.3, tie_seed=seed, index=False)], [theirs], 40, 0.3, 1e-4)[0]
    stable = topk_of(theirs, 40, 0.3)
    assert compare_topk([stable], [theirs], 40, 0.3, 1e-4)[1].startswith("40 identical")
    if seed < 2:  # (asserted for a few seeds: the ties really change the selection)
        assert set(zip(ours.index, ours.classes)) != set(zip(stable.index, stable.classes))


def test_topk_with_fewer_than_k_above_conf():
    theirs = pairs(9)
    ours = topk_of(theirs, 1000, 0.55)
    assert 0 < len(ours) < 1000 and compare_topk([ours], [theirs], 1000, 0.55, 1e-4)[0]
    passed, message = compare_topk([ours.take(np.arange(1, len(ours)))], [theirs], 1000, 0.55, 1e-4)
    assert not passed and "is not detected" in message


@pytest.mark.parametrize("fault", ["missing", "class", "box", "twice", "order", "extra"])
def test_topk_faults_fail(fault):
    theirs = pairs(11)
    theirs.extras["keypoints"] = np.random.default_rng(0).uniform(0, 600, (len(theirs), 6)).astype(np.float32)
    ours = topk_of(theirs, 30, 0.3)
    ours.extras["keypoints"] = theirs.extras["keypoints"][ours.index].copy()
    assert compare_topk([ours], [theirs], 30, 0.3, 1e-4)[0]
    if fault == "missing":  # the best pair left out: another one takes its place past the cut
        ours = topk_of(theirs, 31, 0.3).take(np.arange(1, 31))
        ours.extras["keypoints"] = theirs.extras["keypoints"][ours.index]
    elif fault == "class":
        ours.classes[4] = (ours.classes[4] + 1) % 4
    elif fault == "box":
        ours.boxes[7, 1] += 1.0
    elif fault == "twice":
        ours = ours.take(np.r_[0, np.arange(len(ours) - 1)])
    elif fault == "order":
        ours = ours.take(np.r_[np.arange(1, len(ours)), 0])
    else:
        ours.extras["keypoints"][2, 3] += 1.0
    passed, message = compare_topk([ours], [theirs], 30, 0.3, 1e-4)
    why = {"missing": "is not detected", "class": "score of class", "box": "box by", "twice": "detected twice",
           "order": "not best first", "extra": "keypoints by"}[fault]  # fmt: skip
    assert not passed and why in message, message


# ---- TensorRT's NMS layer as the toolkit wires it ---------------------------------------------------------------
@pytest.mark.parametrize("center, offset", [(False, None), (True, 4096.0)])
def test_nms_layer_network_equals_the_host_rule(center, offset):
    """boxes + scores (+ classes) -> nms_layer -> gather_selected, run by the reference executor, keeps what
    NmsRule.select keeps (class-aware through the class offset, or agnostic), image by image."""
    from trtx import reference
    from trtx.net import Net

    rule = NmsRule(conf=0.35, iou=0.45, max_det=40, max_candidates=300, class_aware=offset is not None,
                   class_offset=offset)  # fmt: skip
    images = [crowd(s, 300) for s in (11, 12)]
    net = Net({})
    nw = net.network
    boxes = nw.add_input("boxes", net.trt.DataType.FLOAT, (-1, 300, 4))
    scores = nw.add_input("scores", net.trt.DataType.FLOAT, (-1, 300))
    classes = nw.add_input("classes", net.trt.DataType.INT32, (-1, 300))
    selected = nms_layer(net, boxes, scores, rule, "nms", classes=classes, center=center)
    picked = gather_selected(net, selected, {"scores": scores, "classes": classes}, "nms")
    for key in ("batch", "index", "scores", "classes"):
        net.output(picked[key], f"kept_{key}")
    box_feed = np.stack([bx.xyxy2xywh(d.boxes) if center else d.boxes for d in images])
    out = reference.execute(nw, {"boxes": box_feed, "scores": np.stack([d.scores for d in images]),
                                 "classes": np.stack([d.classes for d in images]).astype(np.int32)})  # fmt: skip
    out = {k.removeprefix("kept_"): v.numpy() for k, v in out.items()}
    per = unpack_selected(out["batch"], {k: out[k] for k in ("index", "scores", "classes")}, 2, rule.conf)
    for d, got in zip(images, per):
        expected = rule.select(Detections(bx.xywh2xyxy(bx.xyxy2xywh(d.boxes)) if center else d.boxes, d.scores,
                                          d.classes))  # fmt: skip
        assert len(expected) > 10 and np.array_equal(got["index"], expected)


# ---- drawing and results --------------------------------------------------------------------------------------------
def test_coco_json_summary_and_drawing():
    boxes = np.array([[10, 20, 110, 220], [50, 60, 70, 90]], np.float32)
    dets = results.coco_detections(boxes, [0.9, 0.00012], [1, 0], ["cat", "dog"])
    assert dets[0] == {"bbox": [10.0, 20.0, 100.0, 200.0], "category_id": 1, "category": "dog", "score": 0.9}
    assert results.summary(np.array([1, 0, 1]), ["cat", "dog"]) == "3 detections: 2 dog, 1 cat"
    assert results.summary(np.array([]), ["cat"], "faces") == "0 faces"
    assert draw.label("dog", 0.00012) == "dog 1.2e-04" and draw.color(0) == (0x38, 0x38, 0xFF)
    image = np.zeros((240, 320, 3), np.uint8)
    mask = np.zeros((2, 240, 320), bool)
    mask[0, 30:40, 30:40] = True
    draw.masks(image, mask, [draw.color(1), draw.color(2)])
    draw.boxes(image, boxes, ["dog 0.90", "cat 1.2e-04"], [draw.color(1), draw.color(0)])
    draw.points(image, np.array([[[200, 200], [210, 210]]]), [(0, 0, 255), (0, 255, 0)], 3)
    assert tuple(image[200, 200]) == (0, 0, 255) and tuple(image[210, 210]) == (0, 255, 0)
    assert tuple(image[120, 10]) == draw.color(1) and image[35, 35].any()


def test_same_detections_of_two_pipelines():
    """Two pipelines' final detections: the same faces within an IoU / score / extras tolerance, one for one."""
    from netdefs.detection.compare import same_detections

    theirs = RULE.detect([crowd(9)])[0]
    theirs.extras["landmarks"] = theirs.boxes[:, :2].repeat(5, 1)
    ours = jitter(theirs, 3, box=0.05, score=1e-6)
    tol = Tolerance(box=0.0, score=1e-5, extras={"landmarks": 0.1}, iou=0.99)
    passed, message = same_detections([ours], [theirs], tol)
    assert passed and message.startswith(f"{len(theirs)} detections, each one of theirs"), message
    assert not same_detections([ours.take(np.arange(1, len(ours)))], [theirs], tol)[0]  # one missing
    moved = jitter(ours, 4, box=0, score=0)  # a copy without candidate indices: matched by value
    moved.boxes[0] += 3.0
    passed, message = same_detections([moved], [theirs], tol)
    assert not passed and "is no PyTorch candidate within tolerance (box IoU >= 0.99" in message, message
