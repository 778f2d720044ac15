"""The one comparison of detections after NMS, for ``check`` and the tests of every detector.

Greedy NMS is discontinuous. Two candidates whose scores differ by less than the network's rounding swap places,
and which box suppresses which changes down the chain; the ``max_det`` cut falls elsewhere; a box whose two best
classes nearly tie changes class. Random weights make such near-ties the rule (RetinaFace's untrained scores all
sit near 0.5, yolov5's near 1e-4). So the network's detections are not compared with PyTorch's one for one: they
are held to PyTorch's *candidates*, the rows its NMS chose from (:func:`compare_detections`):

1. every detection is a PyTorch candidate: its box, score, class and extras (landmarks, mask coefficients...)
   within tolerance of that candidate (the candidate of the same index when the rows carry one, else the
   closest unused one);
2. together they are a greedy NMS of PyTorch's candidates in an order that departs from PyTorch's only between
   scores within tolerance: no two detections of a class overlap by more than the IoU threshold, and every
   candidate left out is overlapped by a detection of its class that scores as high (within tolerance), or ranks
   past a cut (``max_det``, ``max_candidates``, ``conf``). An IoU the box tolerance can move across the
   threshold counts either way.

Those two conditions characterise greedy NMS exactly (the kept set of greedy NMS in an order is the one set that
has no overlapping pair and leaves nothing out unsuppressed by an earlier kept box), so a network that computes
what PyTorch computes always passes, however its near-ties fall; and a layer that is really wrong moves boxes or
scores past the tolerance, which (1) reports. ``theirs`` may also be PyTorch's final detections where its
candidates are not at hand: each detection must then be one of them, and each of them detected, up to the cut.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from netdefs.detection.boxes import Detections, box_iou, iou_bounds
from netdefs.detection.nms import NmsRule

#: IoU slack for float32 rounding of the IoU itself
IOU_EPS = 1e-6
#: candidates compared per block in the suppression check (bounds the memory of the [R, K] IoU matrices)
BLOCK = 1024


@dataclass(frozen=True)
class Tolerance:
    """Largest differences that still count as equal: ``box`` (any corner coordinate, pixels), ``score``, and per
    extra (``{"landmarks": 0.5}``); with ``iou``, boxes match when their IoU is at least that instead (results of
    two pipelines on the original image, where a box's size sets what a pixel means)."""

    box: float
    score: float
    extras: Mapping[str, float] = field(default_factory=dict)
    iou: float | None = None

    @classmethod
    def relative(cls, rtol: float, rows: Sequence[Detections]) -> Tolerance:
        """``rtol`` x the largest finite |box coordinate| (at least 1), the top score, each extra's largest finite
        |value| (untrained weights overflow some boxes to inf: they compare equal where both sides do)."""
        rows = [r for r in rows if len(r)]

        def peak(arrays, floor: float) -> float:
            finite = [np.abs(a[np.isfinite(a)]) for a in arrays]
            return max([floor] + [float(a.max()) for a in finite if a.size])

        extras = {k: rtol * peak([r.extras[k] for r in rows if k in r.extras], 1e-30) for r in rows for k in r.extras}
        return cls(rtol * peak([r.boxes for r in rows], 1.0), rtol * peak([r.scores for r in rows], 1e-30), extras)


def compare_detections(
    ours: Sequence[Detections], theirs: Sequence[Detections], rule: NmsRule, tol: float | Tolerance = 1e-4
) -> tuple[bool, str]:
    """Per image, ``ours`` (the network's detections) against ``theirs`` (PyTorch's candidates, or its detections)
    as the module doc says; ``tol``: a :class:`Tolerance`, or a relative tolerance for
    :meth:`Tolerance.relative` over PyTorch's candidates above ``rule.conf`` and our detections.
    Returns (passed, a message with the counts and the first problems)."""
    if len(ours) != len(theirs):
        return False, f"{len(ours)} images of detections vs {len(theirs)} of PyTorch candidates"
    problems: list[str] = []
    total = same = 0
    for b, (o, t) in enumerate(zip(ours, theirs)):
        if not isinstance(tol, Tolerance):
            tb = Tolerance.relative(float(tol), [o, t.take(t.scores > np.float32(rule.conf))])
        else:
            tb = tol
        index, bad = _candidates_of(o, t, tb)
        problems += [f"image {b}: {p}" for p in bad]
        if not bad:
            problems += [f"image {b}: {p}" for p in _not_a_greedy_nms(o, index, t, rule, tb)]
            same += len(np.intersect1d(index, rule.select(t)))
        total += len(o)
    matched = f"PyTorch's candidates, box within {_g(tol, 'box')}, score within {_g(tol, 'score')}"
    empty = total == 0 and not problems and not any(len(rule.select(t)) for t in theirs)
    return verdict(problems, total, same, matched, "NMS", "a greedy NMS of PyTorch's candidates", empty=empty)


def same_detections(ours: Sequence[Detections], theirs: Sequence[Detections], tol: Tolerance) -> tuple[bool, str]:
    """The final detections of two pipelines (ours and a reference implementation's, on the same images): each
    of ours one of theirs within ``tol``, each of theirs found -- :func:`compare_detections` with theirs as the
    candidates and an NMS that suppresses nothing."""
    everything = NmsRule(conf=-np.inf, iou=2.0, max_det=max([len(t) for t in theirs] + [1]) + 1, class_aware=False)
    passed, message = compare_detections(ours, theirs, everything, tol)
    box = f"IoU >= {tol.iou}" if tol.iou is not None else f"box within {tol.box:.3g}"
    found = f"{sum(map(len, ours))} detections, each one of theirs ({box}, score within {tol.score:.3g})"
    return passed, found if passed else message


def verdict(
    problems: Sequence[str], total: int, same: int, matched: str, own: str, picks: str, *, empty: bool | None = None
) -> tuple[bool, str]:
    """The result of a detection comparison: its problems fail it; else how many of the ``total`` detections are
    ``same`` as PyTorch's own selection (``own``: "NMS", "top-k"; ``matched``: what counts as the same; ``picks``:
    what ours were shown to be). ``empty``: whether to report nothing compared (default: no detections)."""
    if problems:
        return False, problems_message(problems)
    if total == 0 if empty is None else empty:
        return True, "0 detections on both sides (lower --conf to compare some)"
    tie = f"; {total - same} differ from PyTorch's own {own} only by near-tied scores" if total > same else ""
    return True, f"{same} identical ({matched}){tie}: {picks}"


def problems_message(problems: Sequence[str]) -> str:
    """The failure message of a comparison: how many problems, the first three."""
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return f"{len(problems)} problems: " + "; ".join(problems[:3]) + more


def _g(tol: float | Tolerance, what: str) -> str:
    return f"{getattr(tol, what):.3g}" if isinstance(tol, Tolerance) else f"{tol:g} relative"


def _candidates_of(o: Detections, t: Detections, tol: Tolerance) -> tuple[np.ndarray, list[str]]:
    """The PyTorch candidate each of our detections is (by its ``index``, else the closest unused one within
    tolerance), and what does not fit."""
    problems: list[str] = []
    if o.index is not None:
        index = np.asarray(o.index, np.int64)
        for k, i in enumerate(index):
            why = _differs(o, k, t, int(i), tol)
            if why:
                problems.append(f"detection {_row(o, k)} differs from PyTorch's candidate {i}: {why}")
        return index, problems
    index = np.full(len(o), -1, np.int64)
    by_score = np.argsort(t.scores, kind="stable")
    sorted_scores = t.scores[by_score]
    used = np.zeros(len(t), bool)
    for k in np.argsort(-o.scores, kind="stable"):
        lo = np.searchsorted(sorted_scores, o.scores[k] - tol.score, side="left")
        hi = np.searchsorted(sorted_scores, o.scores[k] + tol.score, side="right")
        near = by_score[lo:hi]
        near = [i for i in near[~used[near]] if not _differs(o, k, t, int(i), tol)]
        if not near:
            box = f"box IoU >= {tol.iou}" if tol.iou is not None else f"box {tol.box:.3g}"
            problems.append(f"detection {_row(o, k)} is no PyTorch candidate within tolerance ({box}, "
                            f"score {tol.score:.3g})")  # fmt: skip
            continue
        i = min(near, key=lambda i: _diff(t.boxes[i], o.boxes[k]))
        index[k], used[i] = i, True
    return index, problems


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    """The largest |a - b|, values equal on both sides (inf included, NaN with NaN) counting 0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    return float(np.where(same, 0.0, np.abs(a - b)).max(initial=0.0))


def _differs(o: Detections, k: int, t: Detections, i: int, tol: Tolerance) -> str:
    box = _diff(o.boxes[k], t.boxes[i])
    score = _diff(o.scores[k], t.scores[i])
    if tol.iou is not None:
        iou = float(box_iou(o.boxes[k], t.boxes[i])[0, 0])
        if iou < tol.iou:
            return f"box IoU {iou:.6f} (< {tol.iou})"
    elif box > tol.box:
        return f"box by {box:.3g} (> {tol.box:.3g})"
    if score > tol.score:
        return f"score by {score:.3g} (> {tol.score:.3g})"
    c = int(o.classes[k])
    if c != int(t.classes[i]) and not (
        t.class_scores is not None and t.class_scores[i, c] >= t.scores[i] - np.float32(tol.score)
    ):
        return f"class {c} vs {int(t.classes[i])}"
    return _extras_differ(o, k, t, i, tol)


def _extras_differ(o: Detections, k: int, t: Detections, i: int, tol: Tolerance) -> str:
    """How row ``k``'s extras (landmarks, mask coefficients...) differ from candidate ``i``'s beyond tolerance."""
    for name, values in o.extras.items():
        if name in t.extras:
            diff = _diff(values[k], t.extras[name][i])
            if diff > tol.extras.get(name, 0.0):
                return f"{name} by {diff:.3g} (> {tol.extras.get(name, 0.0):.3g})"
    return ""


def _not_a_greedy_nms(o: Detections, index: np.ndarray, t: Detections, rule: NmsRule, tol: Tolerance) -> list[str]:
    """What keeps our detections (PyTorch candidates ``index``, best first) from being a greedy NMS of ``t``."""
    problems = []
    if len(index) > rule.max_det:
        problems.append(f"{len(index)} detections, more than max_det {rule.max_det}")
    if len(np.unique(index)) != len(index):
        problems.append("a PyTorch candidate detected twice")
    d = tol.box
    if rule.class_aware and rule.class_offset is not None:  # yolov5's shifted boxes round to the shift's ulp
        d += float(np.spacing(np.float32(rule.class_offset * (int(t.classes.max(initial=0)) + 1) + 2 * tol.box)))
    scores = t.scores.astype(np.float64)
    classes = o.classes if rule.class_aware else np.zeros(len(o), np.int64)
    # (a) no two detections of a class overlap by more than the threshold, whatever the rounding
    low, _ = iou_bounds(t.boxes[index], t.boxes[index], d)
    overlap = (low > rule.iou + IOU_EPS) & (classes[:, None] == classes[None, :])
    for k1, k2 in zip(*np.nonzero(np.triu(overlap, 1))):
        problems.append(f"detections {_row(o, k1)} and {_row(o, k2)} overlap by IoU >= {low[k1, k2]:.4f} "
                        f"(> {rule.iou}): NMS keeps one")  # fmt: skip
    # (b) every candidate above the cuts is detected or suppressed by a detection of its class scoring as high
    floor = rule.conf + tol.score
    above = np.sort(scores[scores > rule.conf])[::-1]
    if rule.max_candidates and len(above) > rule.max_candidates:
        floor = max(floor, above[rule.max_candidates - 1] + tol.score)
    if len(index) >= rule.max_det and len(index):
        floor = max(floor, scores[index].min() + tol.score)
    left = np.setdiff1d(np.nonzero(scores > floor)[0], index)
    for start in range(0, len(left), BLOCK):
        c = left[start : start + BLOCK]
        _, high = iou_bounds(t.boxes[c], t.boxes[index], d)
        ranked = scores[index][None, :] >= scores[c][:, None] - tol.score
        if not rule.class_aware:
            same_class = True
        elif t.class_scores is not None:  # a near tie between two classes may have gone either way
            same_class = t.class_scores[c][:, classes] >= (scores[c][:, None] - tol.score)
        else:
            same_class = t.classes[c][:, None] == classes[None, :]
        suppressed = ((high > rule.iou - IOU_EPS) & ranked & same_class).any(1)
        for i in c[~suppressed]:
            problems.append(f"PyTorch's candidate {i} ({_row(t, i)}) is neither detected nor suppressed by a "
                            f"detection of its class scoring as high")  # fmt: skip
    return problems


def _row(d: Detections, k: int) -> str:
    return (f"[{', '.join(f'{v:.2f}' for v in d.boxes[k])}] class {int(d.classes[k])} "
            f"score {float(d.scores[k]):.6g}")  # fmt: skip


def compare_topk(
    ours: Sequence[Detections], theirs: Sequence[Detections], k: int, conf: float, tol: float | Tolerance = 1e-4
) -> tuple[bool, str]:
    """Per image, ``ours`` -- an end-to-end (NMS-free) detector's detections: the best ``k`` (candidate, class)
    pairs by score, those above ``conf`` kept -- against PyTorch's candidates ``theirs`` (rows with
    ``class_scores``), held the way :func:`compare_detections` holds NMS:

    1. every detection is a PyTorch (candidate, class) pair -- the candidate of its ``index`` where the rows carry
       one, else the closest unused one within tolerance -- box, extras and that class's score within tolerance;
    2. together they are a top-k in an order that departs from PyTorch's only between scores within tolerance:
       no pair twice, at most ``k``, best first, every one above ``conf``, and every pair left out scores no more
       than the lowest detected one (when ``k`` were detected) or than ``conf`` (else), up to the tolerance.

    ``tol``: a :class:`Tolerance`, or a relative one for :meth:`Tolerance.relative` over the candidates above
    ``conf`` and our detections. Returns (passed, a message with the counts and the first problems)."""
    if len(ours) != len(theirs):
        return False, f"{len(ours)} images of detections vs {len(theirs)} of PyTorch candidates"
    problems: list[str] = []
    total = same = 0
    for b, (o, t) in enumerate(zip(ours, theirs)):
        tb = (
            tol
            if isinstance(tol, Tolerance)
            else Tolerance.relative(float(tol), [o, t.take(t.scores > np.float32(conf))])
        )
        pairs, bad = _pairs_of(o, t, tb)
        problems += [f"image {b}: {p}" for p in bad]
        if not bad:
            problems += [f"image {b}: {p}" for p in _not_a_topk(o, pairs, t, k, conf, tb)]
            same += len(np.intersect1d(pairs, _topk_pairs(t, k, conf)))
        total += len(o)
    matched = f"PyTorch's candidate and class, box within {_g(tol, 'box')}, score within {_g(tol, 'score')}"
    return verdict(problems, total, same, matched, "top-k", f"a top-{k} of PyTorch's (candidate, class) pairs")


def _pairs_of(o: Detections, t: Detections, tol: Tolerance) -> tuple[np.ndarray, list[str]]:
    """Each detection's (candidate, class) pair as ``candidate * classes + class``, and what does not fit."""
    nc = t.class_scores.shape[1]
    pairs, problems = np.full(len(o), -1, np.int64), []
    used: set[int] = set()
    for r in range(len(o)):
        c = int(o.classes[r])
        if o.index is not None:
            near = [int(o.index[r])]
        else:  # the candidates whose score for this class and box are within tolerance, closest box first
            near = np.nonzero(np.abs(t.class_scores[:, c] - o.scores[r]) <= tol.score)[0]
            gap = np.abs(t.boxes[near] - o.boxes[r]).max(1)
            near = near[gap <= tol.box][np.argsort(gap[gap <= tol.box], kind="stable")]
            near = [int(i) for i in near if int(i) * nc + c not in used]
        why = "no PyTorch candidate has that box and class score within tolerance" if not near else ""
        for i in near:
            why = _pair_differs(o, r, t, i, c, tol)
            if not why:
                pairs[r] = i * nc + c
                used.add(int(pairs[r]))
                break
        if why:
            what = f"PyTorch's candidate {near[0]}" if o.index is not None else "any PyTorch candidate"
            problems.append(f"detection {_row(o, r)} differs from {what}: {why}")
    return pairs, problems


def _pair_differs(o: Detections, r: int, t: Detections, i: int, c: int, tol: Tolerance) -> str:
    box = float(np.abs(o.boxes[r] - t.boxes[i]).max())
    score = abs(float(o.scores[r]) - float(t.class_scores[i, c]))
    if box > tol.box:
        return f"box by {box:.3g} (> {tol.box:.3g})"
    if score > tol.score:
        return f"score of class {c} by {score:.3g} (> {tol.score:.3g})"
    return _extras_differ(o, r, t, i, tol)


def _not_a_topk(o: Detections, pairs: np.ndarray, t: Detections, k: int, conf: float, tol: Tolerance) -> list[str]:
    """What keeps our detections (pairs, best first) from being a top-k of ``t``'s pairs above ``conf``."""
    problems = []
    if len(pairs) > k:
        problems.append(f"{len(pairs)} detections, more than k = {k}")
    if len(np.unique(pairs)) != len(pairs):
        problems.append("a PyTorch (candidate, class) pair detected twice")
    scores = o.scores.astype(np.float64)
    if len(scores) and scores.min() <= conf:
        problems.append(f"a detection scores {scores.min():.6g}, not above conf {conf}")
    if np.any(np.diff(scores) > tol.score):
        problems.append("detections are not best first")
    flat = t.class_scores.reshape(-1).astype(np.float64)
    floor = (scores.min() if len(pairs) >= k and len(pairs) else conf) + tol.score
    left = np.setdiff1d(np.nonzero(flat > floor)[0], pairs)
    nc = t.class_scores.shape[1]
    for p in left[:5]:
        problems.append(f"PyTorch's candidate {p // nc} scores {flat[p]:.6g} for class {p % nc}, more than the "
                        f"detections' cut {floor - tol.score:.6g}, and is not detected")  # fmt: skip
    if len(left) > 5:
        problems.append(f"{len(left) - 5} more such pairs left out")
    return problems


def _topk_pairs(t: Detections, k: int, conf: float) -> np.ndarray:
    """PyTorch's own top-k pairs above ``conf`` (ties by pair index)."""
    flat = t.class_scores.reshape(-1)
    best = np.argsort(-flat.astype(np.float64), kind="stable")[:k]
    return best[flat[best] > np.float32(conf)]
