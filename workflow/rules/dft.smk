# One pw.x job per unique supercell input.  Inputs are keyed by a hash of their exact text and of the
# DFT engine, written by the sow only when new; a finished pw.out is therefore never recomputed when
# the sow changes (larger cutoff, more random supercells), only new keys run.
rule dft:
    conda:
        "../../envs/dft.yaml"
    input:
        f"{R}/dft/{{key}}/pw.in",
    output:
        f"{R}/dft/{{key}}/pw.out",
    log:
        f"{R}/logs/dft/{{key}}.log",
    wildcard_constraints:
        key=KEY_PATTERN,
    script:
        "../../scripts/run_pw.py"


rule cost:
    conda:
        "../../envs/phonons.yaml"
    input:
        manifest=f"{R}/sow/manifest.json",
        outputs=dft_outputs,
    output:
        table=f"{R}/dft/cost.csv",
        summary=f"{R}/dft/cost_summary.json",
    params:
        store=f"{R}/dft",
    log:
        f"{R}/logs/cost.log",
    script:
        "../../scripts/cost.py"
