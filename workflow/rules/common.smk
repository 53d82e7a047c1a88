from kappaflow.bte import mode_file_name
from kappaflow.dft import engine_tag
from kappaflow.engine import KEY_SCHEME
from kappaflow.plan import mem_mb_estimate
from kappaflow.steps import imported_outputs, manifest_keys, pw_overrides_for_supercells

KEY_PATTERN = "[0-9a-f]{20}"
# phono3py's own mode file of the BTE run (kappa-m<mesh>.hdf5), read by the analysis rules; ShengBTE writes none
BTE_MODES = mode_file_name(config["bte"]["mesh"]) if config["bte"]["backend"] == "phono3py" else None


def dft_outputs(wildcards):
    """Every unique pw.x output the sow asked for (known once the checkpoint has run)."""
    manifest = checkpoints.sow.get().output.manifest
    return [f"{R}/dft/{key}/pw.out" for key in manifest_keys(manifest)] + imported_outputs(manifest)
