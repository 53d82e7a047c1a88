# Input functions of gk.smk (the workflow catalog's convention: functions apart from rules; snakemake --lint).


def gk_models(wildcards):
    """The ML route's committee (gk.potential: committee); none for sw."""
    if GKCFG["potential"] != "committee":
        return []
    return [f"{ML}/models/{MAIN_MODEL}/member{m}/model.npz" for m in MEMBERS]


def gk_bte_kappa(wildcards):
    """The BTE kappa of the same potential (gk.compare_bte)."""
    if not GKCFG["compare_bte"]:
        return []
    return [f"{GK_SAME_POTENTIAL}/bte/kappa.csv"]
