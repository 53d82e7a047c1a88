"""Configuration: one schema, validated at start-up with clear errors.

The effective configuration is, from weakest to strongest: the schema's defaults, the system file
(``config/systems/<system>.yaml``: the physics of one material), then the user's settings
(``config/config.yaml``, ``--configfile``, ``--config``).  Paths in a system file are relative to it.
A system file given as a config file (``--configfile config/systems/ges2.yaml``) is recognised and used
as the system (:func:`system_given_as_config`).
"""

from __future__ import annotations

import copy
import os
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from kappaflow.errors import ConfigError, InputFileError

SYSTEM_KEYS = ("name", "unitcell", "supercell_template", "description")


def schema() -> dict:
    text = resources.files("kappaflow").joinpath("schema/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def put_source_on_pythonpath(basedir) -> None:
    """Jobs run with ``--sdm conda`` use envs/*.yaml, which hold kappaflow's dependencies but not kappaflow:
    put the checkout's ``src/`` first on PYTHONPATH (inherited by every job), so that they import the same
    code an editable install points to."""
    src = os.path.join(str(basedir), "src")
    if os.path.isdir(src):
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))


def schema_path() -> str:
    return str(resources.files("kappaflow").joinpath("schema/config.schema.yaml"))


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _validator():
    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, sch):
        if isinstance(instance, dict):
            for prop, subschema in properties.items():
                if "default" in subschema and prop not in instance:
                    instance[prop] = copy.deepcopy(subschema["default"])
        yield from jsonschema.Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, sch)

    return jsonschema.validators.extend(base, {"properties": set_defaults})


def validate(config: dict, sources: str = "config") -> dict:
    """Validate against the schema, filling defaults; raise ConfigError naming key path and sources."""
    config = copy.deepcopy(config)
    validator = _validator()(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        msg = err.message
        if err.validator == "additionalProperties":
            msg = msg.replace("Additional properties are not allowed", "unknown key(s)")
        raise ConfigError(f"{sources}: {where}: {msg}")
    return config


def _system_file(config: dict) -> Path:
    name = config.get("system")
    if not name:
        raise ConfigError("config: 'system' is not set (name of config/systems/<name>.yaml or a path)")
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = Path(config.get("systems_dir", "config/systems")) / f"{name}.yaml"
    if not candidate.exists():
        raise ConfigError(f"config: system {name!r}: no file {candidate}")
    return candidate


def _read_system(path: Path) -> dict:
    try:
        system = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputFileError(path, f"not valid YAML ({exc})") from None
    if not isinstance(system, dict):
        raise InputFileError(path, "must be a mapping of settings")
    return system


def _system_paths(system: dict) -> dict:
    """The settings of a system file that are paths relative to it: {dotted key: value as written}."""
    paths = {key: system[key] for key in ("unitcell", "supercell_template") if key in system}
    if (system.get("sow") or {}).get("thirdorder_dir"):
        paths["sow.thirdorder_dir"] = system["sow"]["thirdorder_dir"]
    return paths


def system_given_as_config(user_config: dict) -> Path | None:
    """The system file whose settings the user config holds, when one was given as a config file.

    ``snakemake --configfile config/systems/ges2.yaml`` merges that file into the user config, on top of
    ``config/config.yaml`` (``system: si``).  Its paths are relative to the file and do not exist from
    the working directory.  Recognised when the user config's ``unitcell`` does not exist as a path and
    a file in ``systems_dir`` sets the same ``unitcell`` and ``supercell_template``: that file is the
    system (the file's own system wins over ``system:``).
    """
    unitcell = user_config.get("unitcell")
    if not isinstance(unitcell, str) or Path(unitcell).exists():
        return None
    for path in sorted(Path(user_config.get("systems_dir", "config/systems")).glob("*.yaml")):
        try:
            system = _read_system(path)
        except InputFileError:
            continue
        if (system.get("unitcell") == unitcell
                and system.get("supercell_template") == user_config.get("supercell_template")):
            return path
    return None


def _drop_paths(user_config: dict, paths: dict) -> dict:
    """The user config without the system file's own relative paths (resolved from the file instead)."""
    out = copy.deepcopy(user_config)
    for dotted, value in paths.items():
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(leaf) == value:
            del node[leaf]
    return out


def resolve(user_config: dict, check_files: bool = True, check_pseudopotentials: bool = False) -> dict:
    """Merge the system file under the user's settings, validate, and check the inputs it names.

    The pseudopotential files are checked only with ``check_pseudopotentials`` (``kappaflow validate``):
    the workflow's start-up, a dry run and the plan need none; a real run checks them in each pw.x job
    before pw.x starts (:func:`kappaflow.dft.check_pseudopotentials`)."""
    given = system_given_as_config(user_config)
    if given is not None:
        user_config = _drop_paths(user_config, _system_paths(_read_system(given)))
        user_config["system"] = given.stem
    system_path = _system_file(user_config)
    system = _read_system(system_path)
    for key in ("unitcell", "supercell_template"):
        if key in system:
            system[key] = str((system_path.parent / system[key]))
    if (system.get("sow") or {}).get("thirdorder_dir"):
        system["sow"]["thirdorder_dir"] = str(system_path.parent / system["sow"]["thirdorder_dir"])
    for key in ("unitcell", "supercell_template"):
        value = user_config.get(key)
        if check_files and isinstance(value, str) and not Path(value).exists():
            raise ConfigError(f"config: {key} {value!r} does not exist (paths in a config file are "
                              "relative to the working directory; a system file, whose paths are relative "
                              "to it, is chosen with --config system=<name in config/systems, or its path>)")
    merged = deep_merge(system, user_config)
    merged.setdefault("name", system_path.stem)
    config = validate(merged, sources=f"config ({system_path} + user config)")
    for key in ("unitcell", "supercell_template"):
        if key not in config:
            raise ConfigError(f"{system_path}: '{key}' is not set")
    if config["sow"]["pair_cutoff_ang"] is not None and config["sow"]["neighbour_shells"] is not None:
        raise ConfigError(f"config ({system_path} + user config): sow: give pair_cutoff_ang or "
                          "neighbour_shells, not both (to replace the system file's one, set it to null)")
    if config["sow"]["strategy"] == "thirdorder":
        if not config["sow"]["thirdorder_dir"]:
            raise ConfigError(f"config ({system_path} + user config): sow.strategy 'thirdorder' needs "
                              "sow.thirdorder_dir (the directory of BASE.*/DISP.* inputs and outputs)")
        if config["relax"]["enabled"]:
            raise ConfigError(f"config ({system_path} + user config): sow.strategy 'thirdorder' imports "
                              "supercells sown from the unit cell as given; set relax.enabled: false")
    from kappaflow.al.settings import AlSettings

    try:
        AlSettings.from_config(config["ml"]["al"])  # a budget below one run, an empty pool: at start-up
    except ConfigError as exc:
        raise ConfigError(f"config ({system_path} + user config): {exc}") from None
    if check_files:
        check_inputs(config, check_pseudopotentials=check_pseudopotentials)
    return config


def check_inputs(config: dict, check_pseudopotentials: bool = False) -> None:
    """Parse the unit cell and the template now, so that bad input fails before any job runs (and, with
    ``check_pseudopotentials``, that the pseudopotential files exist)."""
    from kappaflow.dft import is_mock_command
    from kappaflow.qe.pwin import check_template, read_pw_input

    unit = read_pw_input(config["unitcell"])
    template_path = config["supercell_template"]
    try:
        template = Path(template_path).read_text()
    except OSError as exc:
        raise InputFileError(template_path, f"cannot read supercell template ({exc.strerror})") from None
    check_template(template, template_path)
    mode = config["dft"]["check_pseudopotentials"]
    if mode is False or (mode == "auto" and is_mock_command(config["dft"]["pw_command"])):
        return
    from kappaflow.qe.pwin import parse_pw_input
    from kappaflow.structure import labels_of
    from kappaflow.qe.pwin import fill_template

    sample = parse_pw_input(fill_template(template, unit.atoms, template_path), template_path)
    checked = ((config["unitcell"], unit), (template_path, sample)) if check_pseudopotentials else ()
    for source, pw in checked:
        pseudo_dir = config["dft"]["pseudo_dir"] or pw.get("control", "pseudo_dir", ".")
        for sp in pw.species:
            path = Path(pseudo_dir) / sp.pseudopotential
            if not path.is_file():
                raise InputFileError(source, f"pseudopotential for {sp.symbol} not found: {path} "
                                     "(set dft.pseudo_dir or fix ATOMIC_SPECIES)")
    missing = set(labels_of(unit.atoms)) - {sp.symbol for sp in sample.species}
    if missing:
        raise InputFileError(template_path, f"ATOMIC_SPECIES lacks {sorted(missing)} used by the unit cell")


def load(configfile, overrides: dict | None = None, check_files: bool = True,
         check_pseudopotentials: bool = False) -> dict:
    """Load a config file as Snakemake would (plus overrides) and resolve it: for the CLI and tests."""
    path = Path(configfile)
    try:
        user = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputFileError(path, f"cannot read config ({exc})") from None
    return resolve(deep_merge(user, overrides or {}), check_files=check_files,
                   check_pseudopotentials=check_pseudopotentials)


def figure_title(config: dict) -> str:
    """The title of the run's figures: the system's description (or name), marked when the forces come
    from the mock pw.x, so that no mock figure passes for DFT."""
    from kappaflow.engine import engine_tag, is_mock_command

    title = config.get("description") or config["name"]
    command = config["dft"]["pw_command"]
    if is_mock_command(command):
        model = engine_tag(command).removeprefix("mock").strip().removeprefix("--model").strip()
        title += f" [mock pw.x: {model}]"
    return title
