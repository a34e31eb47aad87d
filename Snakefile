from snakemake.utils import min_version

min_version("8.0")


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


rule all:
    default_target: True
    input:
        get_final_output(),
