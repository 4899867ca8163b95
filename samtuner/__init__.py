"""sam-tuner: turn users' corrections into personalized LoRA adapters, on Kafka."""

from samtuner.publisher import FeedbackPublisher

__all__ = ["FeedbackPublisher"]
