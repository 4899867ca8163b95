"""Errors of the trainer.

    TrainerError
    ├── TrainingConfigError    a training/LoRA/DPO option is invalid (names the key and the valid ones)
    └── DatasetError           the snapshot is missing, corrupt, or has too few pairs

A job that fails is not an exception in the worker: it ends in a ``TrainingFailed`` event whose
``cause`` and ``error_type`` say why (out of memory, a crash, a bad dataset ...).
"""

from __future__ import annotations


class TrainerError(Exception):
    """Base of every error raised by :mod:`trainer`."""


class TrainingConfigError(TrainerError):
    pass


class DatasetError(TrainerError):
    pass
