"""Errors of the trainer.

    TrainerError
    ├── TrainingConfigError    a training/LoRA/DPO option is invalid (names the key and the valid ones)
    ├── DatasetError           the snapshot is missing, corrupt, or has too few pairs
    └── JobFailed              the training subprocess failed; ``cause`` says why
"""

from __future__ import annotations


class TrainerError(Exception):
    """Base of every error raised by :mod:`trainer`."""


class TrainingConfigError(TrainerError):
    pass


class DatasetError(TrainerError):
    pass


class JobFailed(TrainerError):
    def __init__(self, cause: str, error_type: str = "JobFailed") -> None:
        super().__init__(cause)
        self.cause = cause
        self.error_type = error_type
