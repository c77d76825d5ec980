"""Segmentation accuracy against ground truth: objects matched one-to-one by IoU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MatchResult:
    """How a predicted label image matches a true one at an IoU threshold."""

    n_true: int
    n_predicted: int
    true_positives: int
    mean_matched_iou: float

    @property
    def precision(self) -> float:
        return self.true_positives / self.n_predicted if self.n_predicted else 0.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.n_true if self.n_true else 0.0

    @property
    def f1(self) -> float:
        total = self.n_true + self.n_predicted
        return 2 * self.true_positives / total if total else 1.0

    @property
    def count_error(self) -> float:
        """Relative error of the object count, ``|N_pred - N_true| / N_true``."""
        return abs(self.n_predicted - self.n_true) / self.n_true if self.n_true else 0.0


def match_labels(
    true_labels: np.ndarray, predicted_labels: np.ndarray, iou_threshold: float = 0.5
) -> MatchResult:
    """Match objects of two label images by intersection over union.

    With a threshold of at least 0.5 every object can overlap at most one other object by more
    than half, so matches are unique without an assignment step. All overlaps are counted at
    once from the contingency of (true, predicted) label pairs.

    Parameters
    ----------
    true_labels, predicted_labels
        Integer label images of the same shape, 0 = background.
    iou_threshold
        Minimum IoU for a match; must be >= 0.5.

    Examples
    --------
    >>> a = np.zeros((4, 4), int); a[:2, :2] = 1
    >>> match_labels(a, a).f1
    1.0
    """
    if true_labels.shape != predicted_labels.shape:
        raise ValueError(f"shapes differ: {true_labels.shape} vs {predicted_labels.shape}")
    if iou_threshold < 0.5:
        raise ValueError("iou_threshold must be >= 0.5 for one-to-one matching")
    true_flat = true_labels.ravel().astype(np.int64)
    pred_flat = predicted_labels.ravel().astype(np.int64)
    true_ids = np.unique(true_flat[true_flat > 0])
    pred_ids = np.unique(pred_flat[pred_flat > 0])
    true_area = np.bincount(true_flat)
    pred_area = np.bincount(pred_flat)
    both = (true_flat > 0) & (pred_flat > 0)
    pair_key = true_flat[both] * (pred_flat.max() + 1) + pred_flat[both]
    keys, intersection = np.unique(pair_key, return_counts=True)
    pair_true = keys // (pred_flat.max() + 1)
    pair_pred = keys % (pred_flat.max() + 1)
    union = true_area[pair_true] + pred_area[pair_pred] - intersection
    iou = intersection / union
    matched = iou > iou_threshold if iou_threshold == 0.5 else iou >= iou_threshold
    return MatchResult(
        n_true=int(true_ids.size),
        n_predicted=int(pred_ids.size),
        true_positives=int(matched.sum()),
        mean_matched_iou=float(iou[matched].mean()) if matched.any() else 0.0,
    )


def matched_ious(true_labels: np.ndarray, predicted_labels: np.ndarray) -> np.ndarray:
    """IoU of every matched pair (true and predicted objects overlapping with IoU > 0.5).

    Examples
    --------
    >>> a = np.zeros((4, 4), int); a[:2, :2] = 1
    >>> b = np.zeros((4, 4), int); b[:2, :3] = 1
    >>> matched_ious(a, b).round(3).tolist()
    [0.667]
    """
    true_flat = true_labels.ravel().astype(np.int64)
    pred_flat = predicted_labels.ravel().astype(np.int64)
    base = int(pred_flat.max()) + 1
    both = (true_flat > 0) & (pred_flat > 0)
    keys, intersection = np.unique(true_flat[both] * base + pred_flat[both], return_counts=True)
    union = (
        np.bincount(true_flat)[keys // base] + np.bincount(pred_flat)[keys % base] - intersection
    )
    iou = intersection / union
    return iou[iou > 0.5]


def average_precision(
    true_labels: np.ndarray,
    predicted_labels: np.ndarray,
    thresholds: np.ndarray | None = None,
) -> float:
    """Mean over IoU thresholds (default 0.5, 0.55, ..., 0.9) of TP / (TP + FP + FN).

    The "mAP" of the nucleus-segmentation literature (Data Science Bowl 2018, StarDist,
    Cellpose): at each threshold, objects matched one-to-one count as true positives, the
    other predicted objects as false positives and the other true ones as false negatives.
    """
    if thresholds is None:
        thresholds = np.arange(0.5, 0.91, 0.05)
    ious = matched_ious(true_labels, predicted_labels)
    n_true = int(np.unique(true_labels[true_labels > 0]).size)
    n_pred = int(np.unique(predicted_labels[predicted_labels > 0]).size)
    scores = []
    for threshold in thresholds:
        tp = int((ious > threshold if threshold == 0.5 else ious >= threshold).sum())
        denominator = n_true + n_pred - tp
        scores.append(tp / denominator if denominator else 1.0)
    return float(np.mean(scores))


def without_edge_objects(labels: np.ndarray) -> np.ndarray:
    """``labels`` less the objects with a pixel on the image edge (their touching neighbours
    stay), for references that leave out nuclei cut by the edge.

    Examples
    --------
    >>> without_edge_objects(np.array([[1, 2, 0], [0, 2, 3], [0, 0, 3]])).tolist()
    [[0, 0, 0], [0, 0, 0], [0, 0, 0]]
    >>> without_edge_objects(np.pad(np.array([[1, 2]]), 1)).tolist()[1]
    [0, 1, 2, 0]
    """
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.where(np.isin(labels, edge[edge > 0]), 0, labels)
