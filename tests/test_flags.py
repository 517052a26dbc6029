"""bertdistill/cli/flags.py and distribute.py: defaults, --flagfile, up-front validation naming the
flag, the tsv/csv processor from flags, strategy and precision names, an unreachable TPU."""
import keras
import pytest
from absl import flags

from bertdistill.training import distribute
from bertdistill.errors import FlagError, UserError
from bertdistill.cli.flags import define_common_flags, processor_from_flags, validate_common_flags


def parsed(*args, bert: bool = True) -> flags.FlagValues:
    fv = flags.FlagValues()
    define_common_flags(fv, bert=bert)
    fv(["prog", *args])
    return fv


def test_defaults_are_run_classifiers_and_a_flagfile_works(tmp_path):
    fv = parsed()
    define_common_flags(fv)  # a second call is a no-op
    assert (fv.do_lower_case, fv.max_seq_length, fv.train_batch_size, fv.eval_batch_size, fv.predict_batch_size,
            fv.learning_rate, fv.num_train_epochs, fv.warmup_proportion, fv.save_checkpoints_steps) == (
        True, 128, 32, 8, 8, 5e-5, 3.0, 0.1, 1000)
    assert (fv.task_name, fv.do_train, fv.do_eval, fv.do_predict, fv.data_dir) == ("sst-2", False, False, False, None)
    assert (fv.mixed_precision, fv.distribution_strategy, fv.use_xla, fv.seed, fv.weight_decay, fv.max_grad_norm,
            fv.layerwise_lr_decay, fv.early_stopping_patience, fv.output_dir, fv.log_every_steps) == (
        "float32", "off", False, 12345, 0.01, 1.0, 1.0, 0, None, 100)
    assert "do_train" not in parsed(bert=False) and "skip_bad_rows" in parsed(bert=False)

    flagfile = tmp_path / "run.flags"
    flagfile.write_text("--learning_rate=2e-5\n--mixed_precision=mixed_bfloat16\n--do_train\n--train_batch_size=64\n")
    fv = parsed(f"--flagfile={flagfile}", "--train_batch_size=16")  # the command line after it wins
    assert (fv.learning_rate, fv.mixed_precision, fv.do_train, fv.train_batch_size) == (
        2e-5, "mixed_bfloat16", True, 16)


@pytest.mark.parametrize("args, flag", [
    (["--train_batch_size=0"], "train_batch_size"),
    (["--eval_batch_size=-4"], "eval_batch_size"),
    (["--learning_rate=-1"], "learning_rate"),
    (["--learning_rate=0"], "learning_rate"),
    (["--num_train_epochs=0"], "num_train_epochs"),
    (["--warmup_proportion=1.5"], "warmup_proportion"),
    (["--save_checkpoints_steps=0"], "save_checkpoints_steps"),
    (["--max_seq_length=2"], "max_seq_length"),
    (["--max_grad_norm=-1"], "max_grad_norm"),
    (["--early_stopping_patience=2"], "early_stopping_patience"),  # without an evaluation
    (["--layerwise_lr_decay=0"], "layerwise_lr_decay"),
    (["--distribution_strategy=tpu"], "tpu"),
])
def test_values_that_cannot_be_meant_are_refused_naming_the_flag(args, flag):
    with pytest.raises(FlagError, match=f"--{flag}") as error:
        validate_common_flags(parsed(*args), needs_eval=False)
    assert error.value.flag == flag


def test_sensible_values_pass():
    validate_common_flags(parsed("--early_stopping_patience=2", "--warmup_proportion=0", "--max_seq_length=3"))


def test_tsv_and_csv_processors_come_from_the_flags(tmp_path):
    (tmp_path / "train.csv").write_text('"good, really",pos\nbad,neg\n')
    processor = processor_from_flags(parsed("--task_name=csv", "--labels=neg,pos", "--nohas_header",
                                            "--text_a_column=0", "--label_column=1"))
    examples = processor.get_train_examples(str(tmp_path))
    assert [(e.text_a, e.label) for e in examples] == [("good, really", "pos"), ("bad", "neg")]
    with pytest.raises(FlagError, match="labels"):
        processor_from_flags(parsed("--task_name=tsv"))
    with pytest.raises(FlagError, match="text_a_column='text'"):
        processor_from_flags(parsed("--task_name=tsv", "--labels=a,b", "--nohas_header", "--text_a_column=text"))


def test_strategy_and_precision_names_and_an_unreachable_tpu():
    with pytest.raises(UserError, match="unknown distribution strategy 'horovod'"):
        distribute.get_distribution_strategy("horovod")
    with pytest.raises(UserError, match="unknown precision policy 'float8'"):
        distribute.set_precision_policy("float8")
    assert keras.mixed_precision.global_policy().name == "float32"
    with distribute.precision_policy("mixed_bfloat16"):
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(UserError, match="no TPU reachable"):
        distribute.get_distribution_strategy("tpu", "no-such-tpu")


def test_settings_leave_out_absl_flags():
    from bertdistill.cli import script_flags

    values = flags.FlagValues()
    flags.DEFINE_integer("my_steps", 3, "", flag_values=values)
    values(["prog", "--my_steps=5"])
    assert [(flag.name, flag.value, flag.default) for flag in script_flags.own_flags(values)] == [("my_steps", 5, 3)]
    assert "verbosity" not in [flag.name for flag in script_flags.own_flags(flags.FLAGS)]


@pytest.mark.parametrize("script, build, required", [
    ("bert_finetune/run_classifier.py", "finetune_config", ["--do_train", "--output_dir=out"]),
    ("distil_lstm/main.py", "bilstm_config", ["--mode=train", "--output_dir=out"]),
    ("tinybert/task_distill.py", "task_distill_config", ["--teacher_model=t", "--student_config=s.json",
                                                         "--output_dir=out"]),
    ("tinybert/general_distill.py", "general_distill_config", ["--student_config=s.json", "--corpus=c.txt",
                                                               "--output_dir=out"]),
])
def test_a_config_built_from_default_flags_has_the_configs_defaults(script, build, required):
    """A library user's config and a script's (from the flags' defaults) train alike."""
    import dataclasses

    from bertdistill.cli import script_flags

    def default(name):
        item = type(config).__dataclass_fields__[name]
        return item.default_factory() if item.default is dataclasses.MISSING else item.default

    config = getattr(script_flags, build)(script_flags.check_arguments(script, required))
    for name in ("train", "export", "data", "max_seq_length", "do_lower_case", "temperature", "layer_map",
                 "student_init", "distill_loss", "model"):
        if hasattr(config, name):
            assert getattr(config, name) == default(name), name
    assert (config.run.output_dir, config.run.seed, config.run.mixed_precision) == ("out", 12345, "float32")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.run = None


@pytest.mark.parametrize("script, build, own", [
    ("generate_dataset.py", "transfer_set_config", ["--model=t"]),
    ("tinybert/data_augmentation.py", "tinybert_augmentation_config", []),
])
def test_an_augmentation_config_built_from_default_flags_has_the_configs_defaults(script, build, own):
    import dataclasses

    from bertdistill.cli import script_flags

    config = getattr(script_flags, build)(script_flags.check_arguments(script, ["--input=in", "--output=out.tsv",
                                                                                 *own]))
    chunk_size = 2048 if script == "generate_dataset.py" else 1024  # each script's own default
    assert config.augmentation == type(config.augmentation)(input="in", output="out.tsv", chunk_size=chunk_size)
    for item in dataclasses.fields(config):  # the script's own settings: the config's defaults
        if item.default is not dataclasses.MISSING:
            assert getattr(config, item.name) == item.default, item.name


def defined_flag_names() -> dict[str, list[str]]:
    """Each flag name given literally to an absl `DEFINE_*` call in the project's code (tests
    aside), with where."""
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    sites: dict[str, list[str]] = {}
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if relative.parts[0] in ("tests", ".venv", "build") or relative.parts[0].startswith("."):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr.startswith("DEFINE") and node.args and isinstance(node.args[0], ast.Constant):
                sites.setdefault(node.args[0].value, []).append(f"{relative}:{node.lineno}")
    return sites


def test_each_flag_is_defined_once():
    from bertdistill.cli.shared_flags import SHARED_FLAGS

    sites = defined_flag_names()
    assert "distribution_strategy" in sites and "port" in sites  # the scan sees the library's and the scripts' flags
    assert {name: where for name, where in sites.items() if len(where) > 1} == {}
    assert sorted(set(sites) & set(SHARED_FLAGS)) == []


def test_a_shared_flag_takes_a_scripts_own_help_default_and_several_values_form():
    from bertdistill.cli.shared_flags import define_flag

    fv = flags.FlagValues()
    define_flag("seed", fv, help="Seed of the perturbations.")
    define_flag("augment_factor", fv, default=None)
    define_flag("model_dir", fv, several="list")
    define_flag("seed", fv)  # a second call is a no-op
    fv(["prog", "--model_dir=a/export,b/export"])
    assert (fv["seed"].help, fv.seed, fv.augment_factor, fv.model_dir) == (
        "Seed of the perturbations.", 12345, None, ["a/export", "b/export"])
    with pytest.raises(flags.IllegalFlagValueError):
        fv(["prog", "--seed=-1"])  # the catalogue's bounds hold for every script
    with pytest.raises(ValueError, match="--threads takes one value"):
        define_flag("threads", fv, several="repeated")


@pytest.mark.parametrize("script, required", [
    ("bert_finetune/run_classifier.py", ["--do_train", "--output_dir=out"]),
    ("tinybert/task_distill.py", ["--teacher_model=t", "--student_config=s.json", "--output_dir=out"]),
])
def test_int8_keep_float_is_checked_before_any_work_and_reaches_the_export_config(script, required):
    from bertdistill.cli import script_flags

    with pytest.raises(UserError, match="--int8_keep_float=intermediate,ffn_output: 'ffn_output' is none of"):
        script_flags.check_arguments(script, [*required, "--int8_keep_float=intermediate,ffn_output"])
    with pytest.raises(UserError, match="'ffn_outputs:two' is none of"):
        script_flags.check_arguments(script, [*required, "--int8_keep_float=ffn_outputs:two"])
    fv = script_flags.check_arguments(script, [*required, "--int8_keep_float=value, ffn_outputs:3"])
    assert script_flags.export_config(fv).int8_keep_float == "value, ffn_outputs:3"
