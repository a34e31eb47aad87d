# One rule per CmdStan algorithm, all sharing one script; the method wildcard takes the
# config's method names of that algorithm, so a new method is a config entry, not a new rule.


rule optimize:
    input:
        unpack(fit_inputs),
    output:
        **fit_outputs(),
    log:
        "logs/fits/{dataset}/K{K}/{method}.log",
    benchmark:
        "results/benchmarks/{dataset}/K{K}/{method}.tsv"
    wildcard_constraints:
        method=methods_of("optimize"),
    # fits before the tables and figures waiting for them, the NUTS fits first of all
    priority: 2
    conda:
        "../envs/cmdstan.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        dataset=dataset_spec,
        method=method_spec,
        seed=fit_seed,
        diagnostics=config["diagnostics"],
    script:
        "../scripts/fit.py"


# NUTS first: the longest jobs, on the critical path of a cold run (the VI fits fill in after)
use rule optimize as sample with:
    wildcard_constraints:
        method=methods_of("nuts"),
    priority: 3
    threads: fit_threads


use rule optimize as variational with:
    output:
        **fit_outputs("elbo"),
    wildcard_constraints:
        method=methods_of("advi"),


use rule optimize as pathfinder with:
    wildcard_constraints:
        method=methods_of("pathfinder"),


use rule optimize as laplace with:
    wildcard_constraints:
        method=methods_of("laplace"),
