"""Snakemake adapter: one table of the SBC verdicts of all methods (CSV and Markdown)."""

import pandas as pd

from gmmpipe.io import write_csv, write_text
from gmmpipe.sbc import method_verdicts
from gmmpipe.summarize import to_markdown
from gmmpipe.workflow import log_to

log_to(snakemake.log[0])
tests = pd.concat([pd.read_csv(path) for path in snakemake.input.tests], ignore_index=True)
verdicts = method_verdicts(tests)
write_csv(snakemake.output.csv, verdicts)
write_text(snakemake.output.markdown, to_markdown(verdicts, index=False))
