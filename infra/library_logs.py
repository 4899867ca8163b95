"""Library log lines that say nothing to our users, routed to DEBUG at their source.

bitsandbytes 0.50.2 (``bitsandbytes/backends/cpu/ops.py``, at import, on CPUs with AVX512-BF16) tries
the hub package ``kernels`` for a faster 4-bit CPU matmul and, when it is missing, logs a WARNING:
"Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels' ...". We never
install ``kernels`` (it downloads kernels from a model hub at run time) and never run 4-bit on CPU,
so the line is noise on every command. A filter on that logger demotes exactly that record to DEBUG:
``--log-level DEBUG`` still shows it, and every other record of the logger passes unchanged.
``tests/unit/test_library_logs.py`` fails when bitsandbytes stops logging it; then this can go.
"""

from __future__ import annotations

import logging

BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_KERNELS_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _DemoteToDebug(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and str(record.msg).startswith(self.prefix):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            # The logger's own level check has passed already; drop it here unless DEBUG is wanted.
            return logging.getLogger(record.name).getEffectiveLevel() <= logging.DEBUG
        return True


def route_library_noise() -> None:
    """Install the filters (idempotent). Must run before bitsandbytes is imported: it logs at import."""
    logger = logging.getLogger(BNB_CPU_LOGGER)
    if not any(isinstance(f, _DemoteToDebug) for f in logger.filters):
        logger.addFilter(_DemoteToDebug(BNB_KERNELS_MESSAGE))
