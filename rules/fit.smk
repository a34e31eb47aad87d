# One rule per CmdStan algorithm, all sharing one script; the method wildcard takes the
# config's method names of that algorithm, so a new method is a config entry, not a new rule.


rule optimize:
    input:
        exe="results/model/gmm",
        data="results/data/{dataset}.csv",
    output:
        **fit_outputs(),
    log:
        "logs/fits/{dataset}/{method}.log",
    benchmark:
        "results/benchmarks/{dataset}/{method}.tsv"
    params:
        dataset=dataset_spec,
        method=method_spec,
        seed=fit_seed,
        diagnostics=config["diagnostics"],
    wildcard_constraints:
        method=methods_of("optimize"),
    conda:
        "../environment.yml"
    script:
        "../scripts/fit.py"


use rule optimize as sample with:
    threads: fit_threads
    wildcard_constraints:
        method=methods_of("nuts"),


use rule optimize as variational with:
    output:
        **fit_outputs(elbo="elbo.csv"),
    wildcard_constraints:
        method=methods_of("advi"),


use rule optimize as pathfinder with:
    wildcard_constraints:
        method=methods_of("pathfinder"),
