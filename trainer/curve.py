"""A training curve as a PNG, from a job's ``TrainingProgressed`` events (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from schemas.events import TrainingProgressed


def write_curve(events: Sequence[TrainingProgressed], out: Path, title: str) -> Path:
    """Training loss and held-out loss against the step, with reward accuracy on a second axis.

    When a job was resumed or retried, the last attempt's points win for a step.
    """
    if not events:
        raise ValueError("the job has no progress events to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train: dict[int, tuple[float, float | None]] = {}
    held: dict[int, float] = {}
    for e in sorted(events, key=lambda e: (e.attempt, e.step)):
        if e.loss is not None:
            train[e.step] = (e.loss, e.metrics.get("rewards/accuracies"))
        elif "eval_loss" in e.metrics:
            held[e.step] = e.metrics["eval_loss"]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    steps = sorted(train)
    ax.plot(steps, [train[s][0] for s in steps], label="training loss", color="tab:blue")
    if held:
        hs = sorted(held)
        ax.plot(hs, [held[s] for s in hs], "o--", label="held-out loss", color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    if min([v for v, _ in train.values()] + list(held.values()), default=0.0) > 0:
        ax.set_yscale("log")  # DPO losses fall by orders of magnitude
    acc = [(s, a) for s in steps if (a := train[s][1]) is not None]
    if acc:
        ax2 = ax.twinx()
        ax2.plot([s for s, _ in acc], [a for _, a in acc], color="tab:green", alpha=0.6, label="reward accuracy")
        ax2.set_ylim(-0.05, 1.05)
        ax2.set_ylabel("reward accuracy (train batch)")
        ax2.legend(loc="center right")
    ax.legend(loc="upper right")
    ax.set_title(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
