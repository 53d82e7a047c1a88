# Plan before you pay (docs/planning.md): per candidate setting (plan.supercells × plan.cutoffs_ang ×
# plan.strategies) the pw.x runs, atoms, estimated cost, reap/bte memory and free FC3 parameters,
# without running pw.x.  Target: `snakemake plan`.  The same from the command line: `kappaflow plan`.
import os

from kappaflow.plan import mem_mb_estimate  # noqa: F401  (resources of reap/bte: see docs/planning.md)

# inputs that exist now: a relaxed structure and the cost table of finished jobs sharpen the plan, and
# their appearance or change reruns it; neither is requested (that would run pw.x)
PLAN_OPTIONAL_INPUTS = [p for p in (f"{R}/structure/unitcell.json", f"{R}/dft/cost.csv") if os.path.exists(p)]


rule plan:
    input:
        unitcell=config["unitcell"],
        template=config["supercell_template"],
        existing=PLAN_OPTIONAL_INPUTS,
    output:
        table=f"{R}/plan/plan.csv",
        figure=f"{R}/plan/plan.png",
    log:
        f"{R}/logs/plan.log",
    conda:
        "../../envs/phonons.yaml"
    params:
        plan=config["plan"],
        sow=config["sow"],
        bte=config["bte"],
    script:
        "../../scripts/plan.py"
