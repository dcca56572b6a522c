"""The label budget in the dashboard: the choices, and a live count of labelled and transfer images.

Plain data for the Teacher and Distill pages; the draw itself is kd_core.train.labels'.
"""

from __future__ import annotations

from pathlib import Path

from kd_core.config import LabelConfig
from kd_core.errors import KDError
from kd_core.store import Store
from kd_core.train.data import Dataset
from kd_core.train.labels import label_counts
from kd_core.train.recorder import teacher_labels

# Round budgets for the slider; those the training split can give (at least one label a class) are offered.
BUDGETS = (10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000)
TRANSFER_RATIOS = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0)


def label_choices(data: Dataset) -> list[int]:
    """Budgets in increasing order, then 0 for "all labels"."""
    n, k = len(data.train_y), data.num_classes
    return [b for b in BUDGETS if k <= b < n] + [0]


def budget_label(n: int) -> str:
    return "all" if n == 0 else f"{n:,}"


def count_text(data: Dataset, labels: int, transfer: str = "rest", label_seed: int = 0) -> tuple[dict | None, str]:
    """The live count for a budget ({labelled, transfer, train}) and one line saying it;
    (None, the reason) for a budget or transfer source that cannot be used."""
    try:
        counts = label_counts(data, LabelConfig(labels=labels, label_seed=label_seed, transfer=transfer))
    except KDError as err:
        return None, str(err)
    if labels == 0 and counts["transfer"] == 0:
        return counts, f"All {counts['labelled']:,} training images are labelled; there is no transfer set."
    hidden = counts["transfer"]
    if transfer == "none":
        return counts, f"**{counts['labelled']:,}** labelled images of the {counts['train']:,} in the training split."
    return counts, (
        f"**{counts['labelled']:,}** labelled images · **{hidden:,}** transfer images whose labels the student "
        f"never sees (of {counts['train']:,} in the training split"
        + (", plus the folder's images)" if "folder:" in transfer else ")")
    )


def transfer_spec(folder: str) -> str:
    """The Distill page's transfer source: the rest of the training split, plus a folder of
    unlabelled images when one is given (its absolute path, so the stored run says which)."""
    folder = folder.strip()
    return f"rest+folder:{Path(folder).expanduser().resolve()}" if folder else "rest"


def teacher_budget_note(store: Store, teacher_id: str | None, labels: int) -> str:
    """Which setting the chosen teacher puts this run in: a teacher from elsewhere that saw
    every label, or a semi-supervised one trained on a budget."""
    seen = teacher_labels(store, teacher_id)
    if seen["labelled"] is None and seen["budget"].startswith("unknown"):
        return "The teacher came from a checkpoint file: how many labels it saw is not recorded."
    if seen["budget"] == "all labels":
        if labels == 0:
            return "The teacher was trained on every label."
        return (
            "The teacher was trained on every label (a teacher from elsewhere). For the semi-supervised "
            "setting, train a teacher on the same budget on the Teacher page and pick it in the sidebar."
        )
    return f"The teacher was trained on {seen['budget']} ({seen['labelled']:,} images): semi-supervised."


def trained_on(report: dict) -> str:
    """A finished student's labels in one line, from its stored `labels` report."""
    used = report.get("transfer_used", report.get("transfer", 0))
    if not used:
        return f"Trained on {report['labelled']:,} labelled images; the baseline on the same."
    return (
        f"Trained on {report['labelled']:,} labelled images and {used:,} transfer images (labels hidden); "
        f"the baseline on the same {report['labelled']:,} labelled images, for as many steps."
    )
