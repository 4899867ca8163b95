"""The trainer: TrainingRequested -> a DPO LoRA job in a subprocess -> AdapterPublished."""

from trainer.errors import DatasetError, JobFailed, TrainerError, TrainingConfigError
from trainer.worker import TrainerWorker, run_trainer

__all__ = ["DatasetError", "JobFailed", "TrainerError", "TrainerWorker", "TrainingConfigError", "run_trainer"]
