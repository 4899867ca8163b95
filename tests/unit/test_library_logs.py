"""Library noise is routed, not hidden: the bitsandbytes CPU-kernel line goes to DEBUG, nothing else moves."""

from __future__ import annotations

import logging
import subprocess
import sys

from infra.library_logs import BNB_CPU_LOGGER, BNB_KERNELS_MESSAGE, route_library_noise

LINE = "Failed to load CPU gemm_4bit_forward"


def _stderr_of(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True).stderr


def _logs_the_line() -> bool:
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())  # bitsandbytes only tries the kernels package on such CPUs


def test_importing_peft_through_our_packages_prints_no_kernels_line() -> None:
    assert LINE not in _stderr_of("import infra, peft")


def test_bitsandbytes_logs_the_line_without_our_filter_exactly_on_cpus_it_tries_the_kernels_on() -> None:
    """Canary for infra/library_logs.py: when this fails on an AVX512-BF16 CPU, bitsandbytes stopped logging
    the line (drop the filter); on other CPUs it must stay silent, as the filter's docs say."""
    assert (LINE in _stderr_of("import peft")) == _logs_the_line()


def _records_after(message: str, level: int, logger_level: int) -> list[logging.LogRecord]:
    route_library_noise()
    route_library_noise()  # idempotent
    logger = logging.getLogger(BNB_CPU_LOGGER)
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign,assignment]
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logger_level)
    try:
        logger.log(level, message)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    return seen


def test_the_line_is_kept_at_debug_for_whoever_asks() -> None:
    assert _records_after(BNB_KERNELS_MESSAGE + ": x", logging.WARNING, logging.WARNING) == []
    [record] = _records_after(BNB_KERNELS_MESSAGE + ": x", logging.WARNING, logging.DEBUG)
    assert record.levelname == "DEBUG"


def test_other_bitsandbytes_warnings_pass_unchanged() -> None:
    [record] = _records_after("CUDA setup failed", logging.WARNING, logging.WARNING)
    assert record.levelname == "WARNING"
    assert len(logging.getLogger(BNB_CPU_LOGGER).filters) == 1
