if config["relax"]["enabled"]:

    rule relax_input:
        conda:
            "../../envs/phonons.yaml"
        input:
            unitcell=config["unitcell"],
        output:
            f"{R}/relax/pw.in",
        params:
            pseudo_dir=config["dft"]["pseudo_dir"],
            overrides=config["relax"]["pw_overrides"],
        log:
            f"{R}/logs/relax_input.log",
        script:
            "../../scripts/relax_input.py"

    rule relax:
        conda:
            "../../envs/dft.yaml"
        envmodules:
            *config["modules"]["pwx"],
        input:
            f"{R}/relax/pw.in",
        output:
            f"{R}/relax/pw.out",
        log:
            f"{R}/logs/relax.log",
        script:
            "../../scripts/run_pw.py"

    rule structure:
        conda:
            "../../envs/phonons.yaml"
        input:
            pw_in=f"{R}/relax/pw.in",
            pw_out=f"{R}/relax/pw.out",
        output:
            f"{R}/structure/unitcell.json",
        log:
            f"{R}/logs/structure.log",
        script:
            "../../scripts/structure.py"

else:

    rule structure:
        conda:
            "../../envs/phonons.yaml"
        input:
            unitcell=config["unitcell"],
        output:
            f"{R}/structure/unitcell.json",
        log:
            f"{R}/logs/structure.log",
        script:
            "../../scripts/structure.py"
