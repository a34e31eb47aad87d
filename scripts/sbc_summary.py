"""Snakemake adapter: one table of the SBC verdicts of all methods (CSV and Markdown)."""

import pandas as pd

from gmmpipe.io import atomic_path
from gmmpipe.sbc import markdown_table, method_verdicts
from gmmpipe.workflow import log_to

log_to(snakemake.log[0])
tests = pd.concat([pd.read_csv(path) for path in snakemake.input.tests], ignore_index=True)
verdicts = method_verdicts(tests)
with atomic_path(snakemake.output.csv) as tmp:
    verdicts.to_csv(tmp, index=False)
with atomic_path(snakemake.output.markdown) as tmp:
    tmp.write_text(markdown_table(verdicts) + "\n")
