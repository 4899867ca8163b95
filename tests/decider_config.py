"""A config the decider's Faust app can be built from without a model or a broker (never started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from schemas.config import Config


def decider_config(tmp_path: Path, **sections: Any) -> Config:
    """``Config`` with ``sections`` set; the decider's length checks load a tokenizer, a one-word one here."""
    Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]")).save(str(tmp_path / "tokenizer.json"))
    return Config.model_validate({"model": {"base": str(tmp_path)}, "state_dir": str(tmp_path / "state"), **sections})
