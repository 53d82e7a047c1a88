"""Configuration: one schema, validated at start-up with clear errors.

The effective configuration is, from weakest to strongest: the schema's defaults, the system file
(``config/systems/<system>.yaml``: the physics of one material), then the user's settings
(``config/config.yaml``, ``--configfile``, ``--config``).  Paths in a system file are relative to it.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from kappaflow.errors import ConfigError, InputFileError

SYSTEM_KEYS = ("name", "unitcell", "supercell_template", "description")


def schema() -> dict:
    text = resources.files("kappaflow").joinpath("schema/config.schema.yaml").read_text()
    return yaml.safe_load(text)


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
    base = jsonschema.Draft7Validator

    def set_defaults(validator, properties, instance, sch):
        if isinstance(instance, dict):
            for prop, subschema in properties.items():
                if "default" in subschema and prop not in instance:
                    instance[prop] = copy.deepcopy(subschema["default"])
        yield from jsonschema.Draft7Validator.VALIDATORS["properties"](validator, properties, instance, sch)

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


def resolve(user_config: dict, check_files: bool = True) -> dict:
    """Merge the system file under the user's settings, validate, and check the inputs it names."""
    system_path = _system_file(user_config)
    try:
        system = yaml.safe_load(system_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputFileError(system_path, f"not valid YAML ({exc})") from None
    if not isinstance(system, dict):
        raise InputFileError(system_path, "must be a mapping of settings")
    for key in ("unitcell", "supercell_template"):
        if key in system:
            system[key] = str((system_path.parent / system[key]))
    if (system.get("sow") or {}).get("thirdorder_dir"):
        system["sow"]["thirdorder_dir"] = str(system_path.parent / system["sow"]["thirdorder_dir"])
    merged = deep_merge(system, user_config)
    merged.setdefault("name", system_path.stem)
    config = validate(merged, sources=f"config ({system_path} + user config)")
    for key in ("unitcell", "supercell_template"):
        if key not in config:
            raise ConfigError(f"{system_path}: '{key}' is not set")
    if config["sow"]["pair_cutoff_ang"] is not None and config["sow"]["neighbour_shells"] is not None:
        raise ConfigError(f"config ({system_path} + user config): sow: give pair_cutoff_ang or "
                          "neighbour_shells, not both")
    if config["sow"]["strategy"] == "thirdorder":
        if not config["sow"]["thirdorder_dir"]:
            raise ConfigError(f"config ({system_path} + user config): sow.strategy 'thirdorder' needs "
                              "sow.thirdorder_dir (the directory of BASE.*/DISP.* inputs and outputs)")
        if config["relax"]["enabled"]:
            raise ConfigError(f"config ({system_path} + user config): sow.strategy 'thirdorder' imports "
                              "supercells sown from the unit cell as given; set relax.enabled: false")
    if check_files:
        check_inputs(config)
    return config


def check_inputs(config: dict) -> None:
    """Parse the unit cell and the template now, so that bad input fails before any job runs."""
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
    for source, pw in ((config["unitcell"], unit), (template_path, sample)):
        pseudo_dir = config["dft"]["pseudo_dir"] or pw.get("control", "pseudo_dir", ".")
        for sp in pw.species:
            path = Path(pseudo_dir) / sp.pseudopotential
            if not path.is_file():
                raise InputFileError(source, f"pseudopotential for {sp.symbol} not found: {path} "
                                     "(set dft.pseudo_dir or fix ATOMIC_SPECIES)")
    missing = set(labels_of(unit.atoms)) - {sp.symbol for sp in sample.species}
    if missing:
        raise InputFileError(template_path, f"ATOMIC_SPECIES lacks {sorted(missing)} used by the unit cell")


def load(configfile, overrides: dict | None = None, check_files: bool = True) -> dict:
    """Load a config file as Snakemake would (plus overrides) and resolve it: for the CLI and tests."""
    path = Path(configfile)
    try:
        user = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputFileError(path, f"cannot read config ({exc})") from None
    return resolve(deep_merge(user, overrides or {}), check_files=check_files)
