# One pw.x job per unique supercell input.  Inputs are keyed by a hash of their exact text and of the
# DFT engine, written by the sow only when new; a finished pw.out is therefore never recomputed when
# the sow changes (larger cutoff, more random supercells), only new keys run.
# The SCF rescue (dft.scf_rescue: a non-converged run retried once from pw.rescue.in) is read from the
# config inside the script like dft.pw_command, not passed as a rule parameter: Snakemake reruns a job
# whose params changed, and tuning the rescue must not recompute every finished pw.x run.
rule dft:
    input:
        f"{R}/dft/{{key}}/pw.in",
        gate=lambda wc: stability_gate_for_key(wc),  # pair-displaced supercells wait (stability.smk)
    output:
        f"{R}/dft/{{key}}/pw.out",
    log:
        f"{R}/logs/dft/{{key}}.log",
    wildcard_constraints:
        key=KEY_PATTERN,
    conda:
        "../../envs/dft.yaml"
    envmodules:
        *config["modules"]["pwx"],
    script:
        "../../scripts/run_pw.py"


rule cost:
    input:
        manifest=f"{R}/sow/manifest.json",
        outputs=dft_outputs,
    output:
        table=report(f"{R}/dft/cost.csv", category="Provenance", caption="../report/cost.rst"),
        summary=f"{R}/dft/cost_summary.json",
    log:
        f"{R}/logs/cost.log",
    conda:
        "../../envs/phonons.yaml"
    params:
        store=lambda wc, output: os.path.dirname(output.table),  # R/dft, the store
    script:
        "../../scripts/cost.py"


# When the workflow fails, list every pw.x run that still fails after its SCF rescue together (key,
# role/index in the manifest, reason, pw.x output), from the failure.json records; `kappaflow failures
# results/<name>` prints the same table later.
onerror:
    import sys as _sys
    from kappaflow.dft import collect_failures, format_failures

    _failed = collect_failures(R)
    if _failed:
        print(f"kappaflow: {format_failures(_failed)}\n(again: kappaflow failures {R})", file=_sys.stderr)
