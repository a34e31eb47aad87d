"""Bayesian Gaussian mixture models with Stan, run as a reproducible Snakemake workflow.

One module per stage: :mod:`config`, :mod:`data`, :mod:`cmdstan` (discovery and compile),
:mod:`fit`, :mod:`relabel`, :mod:`diagnostics`, :mod:`summarize`, :mod:`plots`, :mod:`provenance`.
"""

__version__ = "0.1.0"
