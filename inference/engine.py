"""One base model, many per-user LoRA adapters, and answers that say which one answered.

Adapters are validated before they are loaded; a user's pointer flips to the new version only after
it loaded, and the old version is removed after the flip. When a user has no usable adapter the
base model answers and the response carries the reason: never a silent fallback.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from inference.errors import AdapterRejected, GenerationError
from inference.response import PersonalizedResponse
from inference.validate import validate_files
from infra.artifacts import ArtifactStore
from schemas.config import Config
from schemas.events import AdapterPublished
from schemas.ids import user_key

log = logging.getLogger("samtuner.inference")


@dataclass(frozen=True)
class ActiveAdapter:
    version: int
    name: str
    uri: str


class InferenceEngine:
    def __init__(self, cfg: Config, model: Any | None = None, tokenizer: Any | None = None) -> None:
        from transformers.utils import logging as hf_logging

        from infra.models import load_base_model, load_tokenizer

        hf_logging.set_verbosity_error()
        self.cfg = cfg
        self.tokenizer = tokenizer or load_tokenizer(cfg.model.base)
        self.model = model or load_base_model(cfg.model, cfg.quantization)
        self.artifacts = ArtifactStore(cfg.artifact_root)
        self._lock = threading.RLock()
        self._active: dict[str, ActiveAdapter] = {}
        self._failures: dict[str, str] = {}
        self._has_adapters = False

    # -- adapters ------------------------------------------------------------------------------

    def activate(self, event: AdapterPublished) -> bool:
        """Load and switch to ``event``'s version. False when it is not newer than what is active.

        Raises AdapterRejected (the previous version, or the base model, keeps answering).
        """
        current = self._active.get(event.user_id)
        if current is not None and current.version >= event.version:
            return False
        try:
            directory = validate_files(self.artifacts, event)
        except AdapterRejected as exc:
            self._note_failure(event, exc)
            raise
        name = f"a{user_key(event.user_id)}v{event.version}"
        with self._lock:
            try:
                self.model.load_adapter(str(directory), adapter_name=name)
            except Exception as exc:  # any loader error is a rejected adapter, never a crash
                rejected = AdapterRejected("load_error", f"{type(exc).__name__}: {exc}")
                self._note_failure(event, rejected)
                raise rejected from exc
            self._has_adapters = True
            old = self._active.get(event.user_id)
            self._active[event.user_id] = ActiveAdapter(event.version, name, event.uri)
            self._failures.pop(event.user_id, None)
            if old is not None:
                self.model.delete_adapter(old.name)
        log.info("adapter version %d active for a user (%s)", event.version, event.uri)
        return True

    def _note_failure(self, event: AdapterPublished, exc: AdapterRejected) -> None:
        self._failures[event.user_id] = f"adapter v{event.version} rejected ({exc.reason}): {exc.detail}"
        log.warning("adapter version %d rejected: %s", event.version, exc)

    def active_version(self, user_id: str) -> int | None:
        active = self._active.get(user_id)
        return active.version if active else None

    def resident(self) -> dict[str, int]:
        return {user: a.version for user, a in self._active.items()}

    # -- answers -------------------------------------------------------------------------------

    def generate(
        self, prompt: str, user_id: str | None = None, max_new_tokens: int | None = None
    ) -> PersonalizedResponse:
        started = time.perf_counter()
        with self._lock:
            active = self._active.get(user_id) if user_id else None
            if active is not None:
                self.model.enable_adapters()
                self.model.set_adapter(active.name)
                reason = None
            else:
                if self._has_adapters:
                    self.model.disable_adapters()
                reason = self._fallback_reason(user_id)
            text = self._complete(prompt, max_new_tokens or self.cfg.model.max_new_tokens)
        return PersonalizedResponse(
            text=text,
            user_id=user_id,
            source="adapter" if active else "base",
            adapter_version=active.version if active else None,
            fallback_reason=reason,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    def _fallback_reason(self, user_id: str | None) -> str:
        if not user_id:
            return "anonymous: no user id, base model"
        if user_id in self._failures:
            return self._failures[user_id]
        return "no_adapter: this user has no published adapter yet"

    def _complete(self, prompt: str, max_new_tokens: int) -> str:
        import torch

        try:
            inputs = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt",
                return_dict=True,
            )
            device = next(self.model.parameters()).device
            inputs = {k: v.to(device) for k, v in inputs.items()}
            with torch.no_grad():
                out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id)
            return str(self.tokenizer.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))
        except Exception as exc:
            raise GenerationError(f"generation failed: {type(exc).__name__}: {exc}") from exc
