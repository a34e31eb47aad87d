"""Small helpers for the Snakemake script adapters in `scripts/`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def log_to(path: str | Path) -> None:
    """Send stderr and the library's logging to the rule's log file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stderr = open(path, "w")  # noqa: SIM115 - lives as long as the script
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
