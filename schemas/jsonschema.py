"""JSON Schemas of the events, for producers written in other languages."""

from __future__ import annotations

import json
from pathlib import Path

from schemas import commands as C
from schemas import events as E

EXPORTED = (
    E.FeedbackReceived,
    E.PairAccepted,
    E.PairRejected,
    E.TrainingThresholdReached,
    E.TrainingRequested,
    E.TrainingStarted,
    E.TrainingProgressed,
    E.TrainingSucceeded,
    E.TrainingFailed,
    E.AdapterPublished,
    E.LabelledExampleAccepted,
    E.PairDeactivated,
    E.PairReweighted,
    E.PairsDeactivated,
    E.PairsReweighted,
    E.UserErased,
    E.UserForgotten,
    E.TrainingQueued,
    E.TrainingCancelled,
    E.TrainingRejected,
    E.AdapterActivated,
    E.AdapterDeactivated,
    E.AdapterRevoked,
    E.AdapterLoadFailed,
    E.AnswerServed,
    E.CommandRejected,
    C.RequestTraining,
    C.CancelTraining,
    C.ActivateAdapter,
    C.DeactivateAdapter,
    C.DeactivatePair,
    C.ReweightPair,
    C.DeactivatePairs,
    C.ReweightPairs,
    C.EraseUser,
)


def export_json_schemas(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for model in EXPORTED:
        path = out / f"{model.__name__}.schema.json"
        schema = model.model_json_schema(mode="validation")
        schema["$id"] = f"https://sam-tuner.dev/schemas/{model.__name__}.v{E.SCHEMA_VERSION}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
