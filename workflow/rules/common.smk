from kappaflow.dft import engine_tag
from kappaflow.engine import KEY_SCHEME
from kappaflow.plan import mem_mb_estimate
from kappaflow.steps import imported_outputs, manifest_keys, pw_overrides_for_supercells

KEY_PATTERN = "[0-9a-f]{20}"


def dft_outputs(wildcards):
    """Every unique pw.x output the sow asked for (known once the checkpoint has run)."""
    manifest = checkpoints.sow.get().output.manifest
    return [f"{R}/dft/{key}/pw.out" for key in manifest_keys(manifest)] + imported_outputs(manifest)
