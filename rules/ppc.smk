# Posterior predictive check per dataset (every NUTS fit): replicated against observed data,
# marginal densities and PIT; its p-values are also a check of each fit's diagnostics gate.


use rule plot_density as plot_ppc with:
    output:
        png=figure("ppc", "NUTS", "posterior predictive check"),
    log:
        "logs/figures/{dataset}/ppc.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/ppc.tsv"
    params:
        figure="ppc",
        methods=fit_methods("nuts"),
        settings=config["plots"],
