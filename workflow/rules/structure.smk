# Parsing a pw.x input and writing a JSON take a second: Snakemake runs these itself, also under the SLURM
# profile (no submission, no queue wait).  On a cluster they could not be grouped either: relax, between
# them, needs a GPU node and a group must hold every job between two of its members (docs/cluster.md).
localrules:
    structure,


if config["relax"]["enabled"]:

    localrules:
        relax_input,

    rule relax_input:
        input:
            unitcell=config["unitcell"],
        output:
            f"{R}/relax/pw.in",
        log:
            f"{R}/logs/relax_input.log",
        conda:
            "../../envs/phonons.yaml"
        params:
            pseudo_dir=config["dft"]["pseudo_dir"],
            overrides=config["relax"]["pw_overrides"],
        script:
            "../../scripts/relax_input.py"

    rule relax:
        input:
            f"{R}/relax/pw.in",
        output:
            f"{R}/relax/pw.out",
        log:
            f"{R}/logs/relax.log",
        conda:
            "../../envs/dft.yaml"
        envmodules:
            *config["modules"]["pwx"],
        script:
            "../../scripts/run_pw.py"

    rule structure:
        input:
            pw_in=f"{R}/relax/pw.in",
            pw_out=f"{R}/relax/pw.out",
        output:
            f"{R}/structure/unitcell.json",
        log:
            f"{R}/logs/structure.log",
        conda:
            "../../envs/phonons.yaml"
        script:
            "../../scripts/structure.py"

else:

    rule structure:
        input:
            unitcell=config["unitcell"],
        output:
            f"{R}/structure/unitcell.json",
        log:
            f"{R}/logs/structure.log",
        conda:
            "../../envs/phonons.yaml"
        script:
            "../../scripts/structure.py"
