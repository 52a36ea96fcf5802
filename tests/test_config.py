from pathlib import Path

import pytest

from manyicl.config import TrainConfig, builtin_config_dir, describe, field_docs, load_config
from manyicl.errors import ConfigError

SHIPPED = sorted(builtin_config_dir().glob("*.yaml"))


def _config_class(path: Path):
    """The class of the workflow a shipped config declares (``workflow:``)."""
    from manyicl import config as C
    from manyicl.fileio import load_yaml

    declared = (load_yaml(path.read_text()) or {}).get("workflow")
    by_workflow = {w: name for name, w in C.WORKFLOWS.items()}
    assert declared in by_workflow, f"{path.name} must declare workflow: one of {sorted(by_workflow)}"
    return getattr(C, by_workflow[declared])


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_yaml_declares_its_workflow_and_loads(path):
    from manyicl.config import dump_yaml

    cls = _config_class(path)
    cfg = load_config(cls, path)
    assert type(cfg) is cls
    # the resolved config round-trips through YAML unchanged (nothing the file says is lost)
    assert load_config(cls, data=__import__("yaml").safe_load(dump_yaml(cfg))) == cfg


def test_a_config_for_another_workflow_is_refused():
    from manyicl.config import EvalConfig

    with pytest.raises(ConfigError, match="workflow"):
        load_config(EvalConfig, "synthetic")


def test_shipped_configs_exist():
    assert {"synthetic", "tiny"} <= {p.stem for p in SHIPPED}


def test_overrides_and_types():
    cfg = load_config(
        TrainConfig, "tiny", ["data.max_length=256", "optim.lr=1e-4", "data.shots=5", "lora.enabled=false"]
    )
    assert cfg.data.max_length == 256
    assert cfg.optim.lr == pytest.approx(1e-4)  # YAML 1.1 reads 1e-4 as a string; we coerce
    assert cfg.data.shots == 5 and not cfg.lora.enabled
    assert load_config(TrainConfig, "tiny", ["data.shots=max"]).data.shots == "max"


def test_unknown_keys_and_bad_values_are_all_reported():
    with pytest.raises(ConfigError) as e:
        load_config(
            TrainConfig,
            data={
                "data": {"max_lenght": 10, "objective": "mask_everything", "shots": -1},
                "optim": {"lr": 0},
            },
        )
    msg = str(e.value)
    assert "data.max_lenght" in msg and "Did you mean 'max_length'" in msg
    assert "data.objective" in msg and "mask_all_targets" in msg
    assert "data.shots" in msg and "optim.lr" in msg
    assert len(e.value.problems) == 4


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(TrainConfig, None, ["=3"])


def test_missing_config_file_names_shipped_ones():
    with pytest.raises(ConfigError, match="synthetic"):
        load_config(TrainConfig, "no/such/file.yaml")


def test_every_field_has_a_docstring():
    import dataclasses

    def walk(cls):
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            assert docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring"
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(default):
                walk(type(default))

    walk(TrainConfig)
    assert "max_length" in describe(TrainConfig)


def test_partial_override_keeps_a_parents_non_default_subconfig():
    from manyicl.config import EvalConfig

    cfg = load_config(EvalConfig, None, ["tasks.synthetic_instances=2"])
    assert cfg.tasks.split == "held_out" and cfg.tasks.synthetic_instances == 2


def test_shipped_accelerate_configs_load():
    from accelerate.commands.config.config_args import ClusterConfig

    files = sorted((builtin_config_dir() / "accelerate").glob("*.yaml"))
    assert {f.stem for f in files} == {"ddp", "fsdp", "deepspeed_zero2"}
    kinds = {f.stem: ClusterConfig.from_yaml_file(str(f)).distributed_type.name for f in files}
    assert kinds == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero2": "DEEPSPEED"}
