checkpoint sow:
    input:
        structure=f"{R}/structure/unitcell.json",
        template=config["supercell_template"],
    output:
        manifest=f"{R}/sow/manifest.json",
        disp=f"{R}/sow/phono3py_disp.yaml",
    log:
        f"{R}/logs/sow.log",
    conda:
        "../../envs/phonons.yaml"
    # the store key holds pw.x's version, read by running the program once (kappaflow.engine): the same
    # modules as the pw.x jobs (or set dft.pw_version where pw.x cannot start on this rule's node)
    envmodules:
        *config["modules"]["pwx"],
    params:
        sow=config["sow"],
        pw_overrides=pw_overrides_for_supercells(config["dft"]),
        engine=engine_tag(config["dft"]["pw_command"]),
        store=f"{R}/dft",
        store_key=KEY_SCHEME,  # a new key scheme reruns the sow: old store entries are never reused
    script:
        "../../scripts/sow.py"
