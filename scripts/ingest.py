"""Snakemake adapter: validate the user's data file and store it in the pipeline's layout."""

from gmmpipe.config import check_priors, model_ks
from gmmpipe.data import Dataset, read_dataset, write_dataset
from gmmpipe.workflow import log_to

log_to(snakemake.log[0])
spec = snakemake.params.spec
k = max(model_ks(spec["model"]))
data = read_dataset(
    snakemake.input[0],
    k=k,
    columns=spec["file"]["columns"],
    header=spec["file"]["header"],
    id_column=spec["file"].get("id_column"),
)
check_priors(snakemake.wildcards.dataset, spec, data.y, data.names)
truth = {
    "generator": "file",
    "path": str(snakemake.input[0]),
    "columns": spec["file"]["columns"],
    "checksum": snakemake.params.checksum,
}
write_dataset(
    Dataset(y=data.y, truth=truth, columns=data.columns, ids=data.ids, id_column=data.id_column),
    snakemake.output.csv,
    snakemake.output.truth,
)
