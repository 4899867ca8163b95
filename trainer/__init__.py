"""The trainer: TrainingRequested -> a DPO LoRA job in a subprocess -> the evaluation gate -> AdapterPublished."""

from trainer.consumer import run_trainer
from trainer.errors import DatasetError, TrainerError, TrainingConfigError
from trainer.library_config import validate_training_config
from trainer.worker import TrainerWorker

__all__ = [
    "DatasetError",
    "TrainerError",
    "TrainerWorker",
    "TrainingConfigError",
    "run_trainer",
    "validate_training_config",
]
