"""bpj's logger. A library says what it does through logging and lets the application decide what is shown:
the ``bpj`` logger gets a NullHandler, so without a handler of the application's its warnings (retries,
partial successes) are not printed. Here rather than in ``bpj/__init__`` so that ``import bpj`` does not
import logging."""

from __future__ import annotations

import logging

logging.getLogger("bpj").addHandler(logging.NullHandler())


def logger(name: str = "bpj") -> logging.Logger:
    """The ``bpj`` logger (or one below it), with the NullHandler in place."""
    return logging.getLogger(name)
