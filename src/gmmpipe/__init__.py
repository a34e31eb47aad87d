"""Bayesian Gaussian mixture models with Stan, run as a reproducible Snakemake workflow.

One module per stage, lowest first (a module imports only modules above it in this list):

- names, errors, files: :mod:`layout`, :mod:`errors`, :mod:`io`, :mod:`workflow` (logging);
- the config and the data: :mod:`priors`, :mod:`config`, :mod:`sbc_plan`, :mod:`data`;
- draws: :mod:`arrays`, :mod:`relabel`, :mod:`draws`, :mod:`vi`, :mod:`loo` (PSIS-LOO),
  :mod:`ppc` (posterior predictive checks), :mod:`diagnostics` (the gate), :mod:`summarize`;
- CmdStan: :mod:`cmdstan` (discovery and compile), :mod:`inits` (multi-start), :mod:`fit`;
- results: :mod:`mixture_plots`, :mod:`plots`, :mod:`compare` (choosing K), :mod:`membership`,
  :mod:`sbc` (calibration), :mod:`provenance`.
"""

__version__ = "0.1.0"
