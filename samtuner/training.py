"""``samtuner train`` / ``jobs`` / ``curve`` / ``cancel``: training for people, with live progress.

``samtuner train --user U`` sends ``RequestTraining`` on the control topic and follows the user's
next job on the training topic (the decider allocates the generation and the projector cuts the
snapshot and publishes ``TrainingRequested``), showing a progress bar with live loss and reward
accuracy, until the job ends with an adapter or a reason. Ctrl-C cancels the job. With
``--pairs FILE`` it trains in this process from a JSONL file instead, without Kafka.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_END, KafkaException, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from infra.errors import KafkaCallError
from infra.kafka import (
    EventPublisher,
    KafkaEventPublisher,
    describe,
    event_or_none,
    events_in,
    new_reader,
    publish_command,
    read_topic,
    watermarks,
)
from schemas.commands import CancelTraining, RequestTraining
from schemas.config import Config
from schemas.events import (
    Event,
    TrainingCancelled,
    TrainingFailed,
    TrainingProgressed,
    TrainingQueued,
    TrainingRejected,
    TrainingRequested,
    TrainingStarted,
    TrainingSucceeded,
)
from schemas.topics import Topics
from trainer import ledger as L

Outcome = TrainingSucceeded | TrainingFailed | TrainingCancelled | TrainingRejected


@dataclass
class JobDisplay:
    """Turns a job's events into a progress bar and plain lines; remembers the outcome and the curve."""

    console: Console
    progress: Progress
    task: TaskID | None = None
    outcome: Outcome | None = None
    curve: list[TrainingProgressed] = field(default_factory=list)

    @classmethod
    def create(cls, console: Console) -> JobDisplay:
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("acc {task.fields[acc]}"),
            TextColumn("eta {task.fields[eta]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        return cls(console, progress)

    def on_event(self, event: Event) -> bool:
        """Show ``event``; True once the job has ended."""
        say = self.progress.console.print
        if isinstance(event, TrainingRequested):
            say(
                f"request {str(event.request_id)[:8]}: generation {event.generation} of {event.user_id}, "
                f"{event.dataset.rows} pairs (dataset {event.dataset.sha256[:12]})"
            )
        elif isinstance(event, TrainingQueued):
            say(
                f"queued on {event.worker or 'a worker'}"
                + (f", {event.position} job(s) ahead" if event.position else "")
            )
        elif isinstance(event, TrainingStarted):
            resumed = f", resuming from step {event.resumed_from_step}" if event.resumed_from_step else ""
            changed = f", {event.overrides}" if event.overrides else ""
            say(f"attempt {event.attempt} started{resumed}{changed}")
            if self.task is None:
                self.task = self.progress.add_task("training", total=None, loss="-", acc="-", eta="-")
        elif isinstance(event, TrainingProgressed):
            self.curve.append(event)
            if self.task is None:
                self.task = self.progress.add_task("training", total=None, loss="-", acc="-", eta="-")
            if event.loss is None:
                held = event.metrics.get("eval_loss")
                if held is not None:
                    self.progress.update(self.task, description=f"training (held-out loss {held:.3f})")
            else:
                acc = event.metrics.get("rewards/accuracies")
                self.progress.update(
                    self.task,
                    completed=event.step,
                    total=event.total_steps or None,
                    loss=f"{event.loss:.3f}",
                    acc="-" if acc is None else f"{acc:.2f}",
                    eta="-" if event.eta_s is None else f"{event.eta_s:.0f}s",
                )
        elif isinstance(event, TrainingFailed) and event.will_retry:
            say(f"[yellow]attempt {event.attempt} failed: {event.cause}")
        elif isinstance(event, Outcome):
            self.outcome = event
            return True
        return False

    def summary(self) -> tuple[int, str]:
        """(exit code, what happened) for the outcome."""
        e = self.outcome
        if isinstance(e, TrainingSucceeded):
            m = e.metrics
            return 0, (
                f"[green]adapter v{e.adapter_version} published[/] ({e.adapter_uri}) in {e.duration_s:.0f}s: "
                f"held-out preference accuracy {m.get('heldout_policy_accuracy', float('nan')):.2f} per token "
                f"({m.get('heldout_policy_accuracy_summed', float('nan')):.2f} summed, DPO reward accuracy "
                f"{m.get('heldout_pref_accuracy', float('nan')):.2f}) on {m.get('heldout_pairs', 0):.0f} "
                f"pairs, control answers kept {m.get('control_unchanged', float('nan')):.2f} (of "
                f"{m.get('control_base_correct', 0):.0f} the base model answers correctly)"
            )
        if isinstance(e, TrainingRejected):
            new, old = e.metrics.get("heldout_policy_accuracy"), e.baseline_metrics.get("heldout_policy_accuracy")
            return 1, f"[red]not published: the evaluation gate rejected it:[/] {e.reason} (new {new}, before {old})"
        if isinstance(e, TrainingFailed):
            return 1, f"[red]training failed ({e.error_type}) after {e.attempt} attempt(s):[/] {e.cause}"
        if isinstance(e, TrainingCancelled):
            return 1, f"[yellow]cancelled:[/] {e.reason}"
        return 1, "[red]the job did not end"


def end_offsets(cfg: Config, topic: str) -> list[TopicPartition]:
    consumer = new_reader(cfg.kafka, "samtuner-cli")
    try:
        try:
            meta = consumer.list_topics(topic, timeout=15).topics.get(topic)
        except KafkaException as exc:
            raise KafkaCallError(f"cannot reach {describe(cfg.kafka)}: {exc}") from exc
        if meta is None or meta.error is not None:
            raise KafkaCallError(f"topic {topic} does not exist (is the broker up and `samtuner topics` run?)")
        out = []
        for p in meta.partitions:
            _, high = watermarks(consumer, topic, p, 15)
            out.append(TopicPartition(topic, p, high if high >= 0 else OFFSET_END))
        return out
    finally:
        consumer.close()


def follow_training(
    cfg: Config,
    user_id: str,
    display: JobDisplay,
    wait_request_s: float = 120.0,
    publisher: EventPublisher | None = None,
    request: Callable[[], None] | None = None,
    request_id: uuid.UUID | None = None,
) -> None:
    """Follow ``user_id``'s next job (or ``request_id``) from the current end of the training topic.

    ``request`` is called once the consumer is positioned (it sends the command). Ctrl-C sends
    ``CancelTraining`` for the job and waits for it to end.
    """
    topics = Topics(cfg.kafka.topic_prefix)
    starts = (
        end_offsets(cfg, topics.training)
        if request_id is None
        else [TopicPartition(topics.training, tp.partition, 0) for tp in end_offsets(cfg, topics.training)]
    )
    consumer = new_reader(cfg.kafka, "samtuner-cli")
    consumer.assign(starts)
    if request is not None:
        request()
    followed = request_id
    deadline = time.monotonic() + wait_request_s
    cancel_sent = False

    def step() -> bool:
        nonlocal followed
        msg = consumer.poll(0.5)
        if msg is None or msg.error() is not None:
            if followed is None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"no training request for {user_id!r} appeared within {wait_request_s:.0f}s: "
                    "is the decider running (`samtuner run` or `samtuner streams`)?"
                )
            return False
        event = event_or_none(msg.value())
        if event is None or event.user_id != user_id:
            return False
        if followed is None and isinstance(event, TrainingRequested) and event.trigger == "manual":
            followed = event.request_id
        if followed is None or getattr(event, "request_id", None) != followed:
            return False
        return display.on_event(event)

    try:
        with display.progress:
            while True:
                try:
                    if step():
                        return
                except KeyboardInterrupt:
                    if followed is None or cancel_sent:
                        raise
                    display.progress.console.print("[yellow]cancelling the job (Ctrl-C again to stop following)")
                    send = publisher or KafkaEventPublisher(cfg.kafka, client_id="samtuner-cli")
                    publish_command(send, topics.control, CancelTraining(user_id=user_id, request_id=followed))
                    send.flush()
                    cancel_sent = True
    finally:
        consumer.close()


def request_and_follow(cfg: Config, user_id: str, display: JobDisplay, wait_request_s: float) -> None:
    topics = Topics(cfg.kafka.topic_prefix)
    publisher = KafkaEventPublisher(cfg.kafka, client_id="samtuner-cli")

    def send() -> None:
        publish_command(publisher, topics.control, RequestTraining(user_id=user_id, issued_by="cli"))
        publisher.flush()
        display.console.print(f"asked for training of {user_id!r}; waiting for the request (generation, snapshot)")

    follow_training(cfg, user_id, display, wait_request_s, publisher=publisher, request=send)


class DisplayPublisher:
    """An EventPublisher for local runs: events go to the display, nothing to Kafka."""

    def __init__(self, display: JobDisplay) -> None:
        self.display = display
        self.events: list[Event] = []

    def publish(self, topic: str, event: Event) -> None:
        self.events.append(event)
        self.display.on_event(event)

    def publish_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        pass

    def flush(self, timeout_s: float = 30.0) -> None:
        pass


def train_locally(cfg: Config, user_id: str, pairs_file: Path, display: JobDisplay) -> None:
    """Train from a pairs file in this process (no Kafka): the adapter lands in the artifact store."""
    from infra.artifacts import ArtifactStore
    from trainer.local import local_request, read_pairs_file
    from trainer.worker import TrainerWorker

    store = ArtifactStore(cfg.artifact_root)
    rows = read_pairs_file(pairs_file, user_id)
    request = local_request(store, user_id, next_local_version(store, user_id), rows)
    worker = TrainerWorker(cfg, DisplayPublisher(display), worker_id="local")
    with display.progress:
        display.on_event(request)
        worker.run_one(request)


def next_local_version(store: Any, user_id: str) -> int:
    directory = store.resolve(store.adapter_uri(user_id, 1)).parent
    versions = [int(p.name) for p in directory.iterdir() if p.name.isdigit()] if directory.is_dir() else []
    return max(versions, default=0) + 1


def ledger_from_topic(cfg: Config) -> tuple[L.Ledger, list[Event]]:
    events = list(events_in(read_topic(cfg.kafka, Topics(cfg.kafka.topic_prefix).training)))
    ledger: L.Ledger = {}
    for event in events:
        ledger = L.apply(ledger, event)
    return ledger, events


def jobs_table(jobs: Sequence[L.Job]) -> Table:
    table = Table(title="training jobs (from the ledger)")
    for name in ("request", "user", "gen", "trigger", "status", "attempt", "step", "loss", "adapter", "updated"):
        table.add_column(name, no_wrap=True)
    table.add_column("cause / reason", overflow="fold", min_width=20)
    colors = {"succeeded": "green", "failed": "red", "rejected": "red", "cancelled": "yellow", "retrying": "yellow"}
    for j in jobs:
        status = f"[{colors[j.status]}]{j.status}[/]" if j.status in colors else j.status
        table.add_row(
            j.request_id[:8],
            j.request.user_id,
            str(j.request.generation),
            j.request.trigger,
            status,
            str(j.attempt),
            f"{j.step}/{j.total_steps}" if j.total_steps else "-",
            "-" if j.loss is None else f"{j.loss:.3f}",
            f"v{j.adapter_version}" if j.adapter_version else "-",
            j.updated_at.strftime("%Y-%m-%d %H:%M:%S") if j.updated_at else "-",
            j.cause[:200],
        )
    return table


def find_job(ledger: L.Ledger, prefix: str) -> L.Job:
    matches = [j for rid, j in ledger.items() if rid.startswith(prefix.lower())]
    if not matches:
        raise LookupError(f"no job whose request id starts with {prefix!r}")
    if len(matches) > 1:
        raise LookupError(f"{prefix!r} matches {len(matches)} jobs; give more of the request id")
    return matches[0]


def job_summary(job: L.Job) -> dict[str, Any]:
    """One job as plain JSON (``samtuner jobs --json``)."""
    return {
        "request_id": job.request_id,
        "user_id": job.request.user_id,
        "generation": job.request.generation,
        "trigger": job.request.trigger,
        "status": job.status,
        "attempt": job.attempt,
        "step": job.step,
        "total_steps": job.total_steps,
        "loss": job.loss,
        "adapter_version": job.adapter_version,
        "adapter_uri": job.adapter_uri or None,
        "cause": job.cause or None,
        "metrics": job.metrics,
        "updated_at": job.updated_at.isoformat() if job.updated_at else None,
    }
