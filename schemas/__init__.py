"""The contract between all parts: events, topics, configuration and table DDL."""

from schemas.codec import decode, decode_as, encode_headers, encode_key, encode_value
from schemas.config import Config, load_config, parse_config
from schemas.errors import ConfigError, EventDecodeError, SchemaError
from schemas.events import (
    AdapterPublished,
    BaseModelRef,
    DatasetRef,
    Event,
    FeedbackReceived,
    PairAccepted,
    PairRejected,
    RejectionReason,
    SourceRef,
    TrainingFailed,
    TrainingProgressed,
    TrainingRequested,
    TrainingStarted,
    TrainingSucceeded,
    TrainingThresholdReached,
)
from schemas.topics import Topics

__all__ = [
    "AdapterPublished",
    "BaseModelRef",
    "Config",
    "ConfigError",
    "DatasetRef",
    "Event",
    "EventDecodeError",
    "FeedbackReceived",
    "PairAccepted",
    "PairRejected",
    "RejectionReason",
    "SchemaError",
    "SourceRef",
    "Topics",
    "TrainingFailed",
    "TrainingProgressed",
    "TrainingRequested",
    "TrainingStarted",
    "TrainingSucceeded",
    "TrainingThresholdReached",
    "decode",
    "decode_as",
    "encode_headers",
    "encode_key",
    "encode_value",
    "load_config",
    "parse_config",
]
