"""sam-tuner: turn users' corrections into personalized LoRA adapters, on Kafka."""

from inference.client import generate_personalized_response
from inference.response import PersonalizedResponse
from samtuner.publisher import FeedbackPublisher

__all__ = ["FeedbackPublisher", "PersonalizedResponse", "generate_personalized_response"]
