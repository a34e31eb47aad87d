from snakemake.utils import min_version

min_version("8.0")


# config/config.yaml is the default: a config given with `--configfile` replaces it instead of
# being merged into it, so that a user's datasets and methods are exactly the ones run.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/model.smk"
include: "rules/fit.smk"
include: "rules/summarize.smk"
include: "rules/plot.smk"
include: "rules/compare.smk"
include: "rules/report.smk"
include: "rules/sbc.smk"


onstart:
    check_results_writable()


onsuccess:
    report_diagnostics()


onerror:
    report_diagnostics()


rule all:
    default_target: True
    input:
        get_final_output(),
