"""The whole distillation chain in one command, ending in a report:

    python run_pipeline.py --output_dir=outputs/pipeline --preset=smoke   # a first look (docs/results.md)
    python run_pipeline.py --output_dir=outputs/pipeline --preset=full    # the README's numbers
    python run_pipeline.py --output_dir=outputs/large --preset=large      # the 12-layer MPNet teacher (hours)

    python run_pipeline.py --output_dir=outputs/qa --data_dir=my_task --task_name=tsv --labels=no,yes \
        --text_a_column=question --text_b_column=answer --label_column=verdict   # your own TSV/CSV task

Stages, each one of the toolkit's scripts in `<output_dir>/<stage>`:
  data           the task's train/dev files: SST-2 from --data_dir (default ../shared/data/sst2 when
                 present, else tfds glue/sst2), or --task_name=tsv|csv from --data_dir, read as the
                 task flags (those of run_classifier.py) say; a seeded train subsample in `data/`
                 when the preset or --max_train_examples asks (a user's file: its lines, header kept)
  teacher_<k>    bert_finetune/run_classifier.py, --num_teachers seeds (best-by-dev, exported)
  transfer       generate_dataset.py: augmented train set labelled by the mean of the teachers' logits
  transfer_bilstm  with --lstm_augment_factor (--preset=large: x8): the BiLSTM's own, larger transfer set
  bilstm_gold    distil_lstm/main.py --mode=train (gold labels: the baseline)
  bilstm_distil  distil_lstm/main.py --mode=distil (the transfer set; --preset=large: its own, from the
                 teacher's input embeddings)
  tinybert       tinybert/task_distill.py: stage 1 (teacher_1 online) + stage 2 (the transfer set);
                 --preset=large: tinybert_6l from the pretrained MiniLM (its own vocabulary; stage 1 on
                 hidden states alone), then tinybert_3l from layers 2, 4, 6 of that student, stage 2 only
  report         <output_dir>/report/: results.json, results.md, accuracy_vs_latency.png, robustness.png

A sentence-pair task (--text_b_column) skips what reads single sentences only, each with a line
in the report saying why: the BiLSTM stages, students with their own vocabulary, robustness.

Run the same command again after an interruption (even `kill -9`): completed stages are
skipped, the interrupted one resumes from its checkpoints; the report is made again when a stage
before it ran or finished after it. `--stages=a,b` runs a subset (the
stages they read must be complete), each a name above or one stage's own (`teacher_2`,
`tinybert_3l`); `--stages=report` alone remakes the report. Extra flags for
one stage's script: `--stage_flag=bilstm_gold:--hidden_size=150` (repeatable; `teacher` applies to
every teacher, `teacher_2` to that one only, after those of `teacher`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import sys
from collections.abc import Callable

import numpy as np
from absl import flags, logging

from bertdistill import errors
from bertdistill.cli import entry

from bertdistill.cli import script_flags

from bertdistill.data import data, robustness

from bertdistill.distill import layer_map

from bertdistill.models import model_packages

from bertdistill.pipeline import orchestration, report

from bertdistill.training import locks, manifest, validation
from bertdistill.models.bert import BertConfig
from bertdistill.models.encoders import config_from_json_file
from bertdistill.errors import FlagError
from bertdistill.export_format import CONFIG, EXPORT_INFO, TEXT_PAIR
from bertdistill.files import atomic_output
from bertdistill.cli.shared_flags import define_flag
from bertdistill.cli.flags import define_data_flags, define_task_flags, processor_from_flags, task_flag_arguments

REPO = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "sst2"))
STUDENT_CONFIG = os.path.join(REPO, "tinybert", "configs", "student_3l_384.json")
STAGE_NAMES = ("data", "teacher", "transfer", "transfer_bilstm", "bilstm_gold", "bilstm_distil", "tinybert", "report")
DERIVED_STUDENT_CONFIG = "student_config.json"  # in --output_dir: the default student with the teacher's sizes


def stage_export(stage: str) -> str:
    """In a preset's student flags: the export folder of an earlier stage of the same run."""
    return os.path.join("{output_dir}", stage, "export")


def student_flags(flags_of: list[str], output_dir: str) -> list[str]:
    """A preset's student flags with `stage_export` placeholders in `output_dir`."""
    return [flag.format(output_dir=output_dir) for flag in flags_of]


def tinybert_stages(flags_of: list[str]) -> str:
    """The TinyBERT stages a student's flags (the preset's, then --stage_flag's) run: the last
    --stage= value, else task_distill's default `both`."""
    values = [flag.partition("=")[2] for flag in flags_of if flag.startswith("--stage=")]
    return values[-1] if values else "both"


# Each preset's recipe; a flag given on the command line wins over its preset value.
PRESETS = {
    "smoke": dict(max_train_examples=2000, num_teachers=1, teacher_epochs=2.0, teacher=None, teacher_learning_rate=5e-5,
                  teacher_precision="float32", student_precision="float32", augment_factor=4, lstm_epochs=3.0,
                  lstm_distil_epochs=3.0, intermediate_epochs=1.0, prediction_epochs=1.0,
                  intermediate_max_examples=0, robustness_examples=300, robustness_rates=["0.1"], speed_rounds=2,
                  latency_texts=100, teacher_int8_keep_float=None, lstm_augment_factor=0,
                  lstm_transfer_precision="float32", lstm_distil_flags=[], students={"tinybert": []},
                  minutes=dict(data=0.1, teacher=3.0, transfer=0.8, bilstm_gold=0.6, bilstm_distil=1.0,
                               tinybert=4.5, report=1.5)),
    "full": dict(max_train_examples=0, num_teachers=1, teacher_epochs=2.0, teacher=None, teacher_learning_rate=5e-5,
                 teacher_precision="float32", student_precision="float32", augment_factor=2, lstm_epochs=10.0,
                 lstm_distil_epochs=3.0, intermediate_epochs=1.0, prediction_epochs=2.0,
                 intermediate_max_examples=67349, robustness_examples=0, robustness_rates=["0.1", "0.2"],
                 speed_rounds=3, latency_texts=200, teacher_int8_keep_float=None, lstm_augment_factor=0,
                 lstm_transfer_precision="float32", lstm_distil_flags=[], students={"tinybert": []},
                 minutes=dict(data=0.1, teacher=30.0, transfer=7.0, bilstm_gold=13.0, bilstm_distil=14.0,
                              tinybert=40.0, report=3.0)),
    # The 12-layer MPNet teacher (all-mpnet-base-v2), fine-tuned in bfloat16 on the CPU's AMX units.
    "large": dict(max_train_examples=0, num_teachers=1, teacher_epochs=2.0, teacher="mpnet", teacher_learning_rate=2e-5,
                  teacher_precision="mixed_bfloat16", student_precision="mixed_bfloat16", augment_factor=2,
                  lstm_epochs=10.0,
                  lstm_distil_epochs=3.0, intermediate_epochs=3.0, prediction_epochs=2.0,
                  intermediate_max_examples=0, robustness_examples=0, robustness_rates=["0.1", "0.2"],
                  speed_rounds=3, latency_texts=200,
                  # INT8 within 0.5 point of float32 (docs/results.md, "INT8 settings on the MPNet teacher").
                  teacher_int8_keep_float="intermediate",
                  # The BiLSTM learns from its own x8 transfer set (labelled in bfloat16) and starts from the
                  # teacher's input embeddings: 88.53 and 88.88 over two seeds against 87.39 on the shared x2
                  # set, which did not help TinyBERT when x8 (89.11 against 90.71). docs/results.md, "The large
                  # chain".
                  lstm_augment_factor=8, lstm_transfer_precision="mixed_bfloat16",
                  lstm_distil_flags=[f"--word_vectors={stage_export('teacher_1')}", "--embedding_dim=768"],
                  # Students with the MiniLM's own vocabulary: all 6 layers of the pretrained MiniLM, then
                  # layers 2, 4, 6 (and the head) of that distilled 6-layer student. The 6L first fits its
                  # hidden states to every second teacher layer's over the whole transfer set (no attention
                  # matches: the heads of two models pretrained apart do not correspond), then stage 2 at
                  # 3e-5: after 2 epochs of stage 1, 91.74 and 91.63 over two seeds against 90.71 and 89.33
                  # in stage 2 alone; 3 epochs since: 91.74 again on the first seed (a lower stage-1
                  # loss). The 3L runs stage 2 alone at 1e-4 (89.80 over two seeds against 89.33 at 3e-5).
                  # docs/results.md, "The large chain".
                  students={"tinybert_6l": ["--student_model=minilm", "--layer_map=uniform:hidden"],
                            "tinybert_3l": [f"--student_model={stage_export('tinybert_6l')}", "--student_layers=2,4,6",
                                            "--stage=prediction", "--prediction_learning_rate=1e-4"]},
                  minutes=dict(data=0.1, teacher=150.0, transfer=25.0, transfer_bilstm=40.0, bilstm_gold=13.0,
                               bilstm_distil=37.0, tinybert_6l=130.0, tinybert_3l=20.0, report=5.0)),
}

define_flag("output_dir", default="outputs/pipeline", help="Every stage's folder, the logs and the report.")
define_flag("data_dir", help="The task's folder (train and dev files); for SST-2 default ../shared/data/sst2 when "
            "present, else tfds glue/sst2.")
define_task_flags()
define_data_flags()
define_flag("init_checkpoint", help="The teacher's start: a short name (minilm, mpnet), a Hugging Face folder, "
            "export folder or Google checkpoint (default: the preset's).")
flags.DEFINE_enum("preset", "smoke", list(PRESETS), "smoke: a 2,000-sentence subsample (minutes); full: the README's "
                  "recipe (hours); large: the full recipe with the 12-layer MPNet teacher (many hours). Measured "
                  "times: docs/results.md.")
flags.DEFINE_list("stages", None, f"Stages to run (default: all), in order: {', '.join(STAGE_NAMES)}, or one "
                  "stage by its own name (teacher_2, tinybert_3l).")
define_flag("seed", help="Seed of every stage (teacher k gets seed + k - 1).")
flags.DEFINE_integer("num_teachers", None, "Teachers (seeds) fine-tuned; the transfer set gets their mean logits.")
flags.DEFINE_float("teacher_epochs", None, "Teacher fine-tuning epochs (best-by-dev over the epochs is kept).")
flags.DEFINE_float("teacher_learning_rate", None, "Teacher fine-tuning peak learning rate.")
flags.DEFINE_enum("teacher_precision", None, ["float32", "mixed_float16", "mixed_bfloat16"],
                  "Teacher fine-tuning precision (exports are float32).")
flags.DEFINE_enum("student_precision", None, ["float32", "mixed_float16", "mixed_bfloat16"],
                  "TinyBERT stages' precision, the teacher's forward pass in stage 1 included (exports are float32).")
flags.DEFINE_string("teacher_int8_keep_float", None, "The teacher export's --int8_keep_float (the weight "
                    "MatMuls its INT8 model keeps in float32; default: the exporter's).")
flags.DEFINE_integer("max_train_examples", None, "A seeded subsample of the train set (0: all).")
define_flag("augment_factor", default=None, help="New sentences per train sentence in the transfer set.")
flags.DEFINE_integer("lstm_augment_factor", None, "The BiLSTM's own transfer set (stage transfer_bilstm) with this "
                     "many new sentences per train sentence; 0: the BiLSTM reads the shared transfer set.")
flags.DEFINE_enum("lstm_transfer_precision", None, ["float32", "mixed_bfloat16"],
                  "Precision of the teachers labelling the BiLSTM's own transfer set (bfloat16: about 1.5x as fast).")
flags.DEFINE_float("lstm_epochs", None, "BiLSTM gold-label epochs (early stopping patience 3).")
flags.DEFINE_float("lstm_distil_epochs", None, "BiLSTM distillation epochs on the transfer set.")
define_flag("intermediate_epochs", default=None)
define_flag("prediction_epochs", default=None)
define_flag("intermediate_max_examples", help="TinyBERT stage 1 on a subset of the transfer set (0: all).")
define_flag("student_config", default=STUDENT_CONFIG, help="TinyBERT student config (student init: teacher layers; "
                    "default: 3 layers, 384 wide, or the teacher's width when the teacher is not 384 wide).")
flags.DEFINE_integer("robustness_examples", None, "Dev examples perturbed in the report (0: all).")
flags.DEFINE_list("robustness_rates", None, "Perturbation rates in the report.")
flags.DEFINE_integer("speed_rounds", None, "Interleaved timing rounds in the report (medians).")
flags.DEFINE_integer("latency_texts", None, "Single-sentence calls per model and round.")
define_flag("int8_max_drop", help="Each export's INT8 model is recommended for serving only if it loses at most "
            "this many dev points.")
flags.DEFINE_multi_string("stage_flag", [], "STAGE:--flag=value passed to one stage's script (repeatable); "
                          "STAGE as in --stages (teacher: every teacher; teacher_2: that one).")
flags.DEFINE_string("compare_with", None, "Another finished pipeline run (its --output_dir): the report shows its models "
                    "beside this run's, named FOLDER:STAGE, measured in the same process (e.g. the MiniLM chain "
                    "beside --preset=large). With a complete run, add --stages=report to remake the report.")
define_flag("overwrite_output_dir")
FLAGS = flags.FLAGS


def setting(name: str):
    """The flag's value when given, else the preset's."""
    return FLAGS[name].value if name in FLAGS and FLAGS[name].present else PRESETS[FLAGS.preset][name]


def teacher_init() -> str | None:
    """The teacher's start: --init_checkpoint, else the preset's (None: run_classifier's default)."""
    return FLAGS.init_checkpoint or PRESETS[FLAGS.preset]["teacher"]


def stage_flags() -> dict[str, list[str]]:
    """--stage_flag by the stage name it gives (a --stages name or one stage's own)."""
    extra: dict[str, list[str]] = {}
    for item in FLAGS.stage_flag:
        stage, _, flag = item.partition(":")
        if family(stage) not in STAGE_NAMES or not flag.startswith("--"):
            raise FlagError("stage_flag", f"--stage_flag={item!r}: expected STAGE:--flag=value with STAGE one of "
                                          f"{', '.join(STAGE_NAMES)} or one stage's own name (teacher_2)")
        extra.setdefault(stage, []).append(flag)
    return extra


def flags_of_stage(extra: dict[str, list[str]], name: str) -> list[str]:
    """The --stage_flag values for stage `name`: its --stages name's, then its own."""
    return [flag for key in dict.fromkeys([family(name), name]) for flag in extra.get(key, [])]


def check_stage_names(stages: list[orchestration.Stage], extra: dict[str, list[str]]) -> None:
    """--stages and --stage_flag (`extra`) name stages of this run: a --stages name it has (or
    skips, saying why) or one stage's own name."""
    present = {family(stage.name) for stage in stages} | set(skipped_stages())
    known = [*(name for name in STAGE_NAMES if name in present),
             *(stage.name for stage in stages if stage.name not in STAGE_NAMES)]
    if FLAGS.stages == []:
        raise FlagError("stages", f"--stages is empty; choose from {', '.join(known)}")
    unknown = [name for name in FLAGS.stages or [] if name not in known]
    if unknown:
        raise FlagError("stages", f"--stages={','.join(FLAGS.stages)}: unknown {unknown}; choose from "
                                  f"{', '.join(known)}")
    for name in extra:
        if name not in known:
            raise FlagError("stage_flag", f"--stage_flag={name}:...: this run has no stage {name}; choose from "
                                          f"{', '.join(known)}")


def validate() -> list[orchestration.Stage]:
    """Every flag checked before any work; the stages --stages chooses."""
    for name in ("num_teachers", "teacher_epochs", "augment_factor", "lstm_epochs", "lstm_distil_epochs",
                 "intermediate_epochs", "prediction_epochs", "speed_rounds", "latency_texts"):
        validation.positive(name, setting(name))
    if FLAGS.int8_max_drop < 0:
        raise FlagError("int8_max_drop", f"--int8_max_drop={FLAGS.int8_max_drop} must not be negative")
    if setting("lstm_augment_factor") < 0:
        raise FlagError("lstm_augment_factor", f"--lstm_augment_factor={setting('lstm_augment_factor')} must be 0 (the "
                                               "shared transfer set) or more")
    for name in ("max_train_examples", "intermediate_max_examples", "robustness_examples"):
        if setting(name) < 0:
            raise FlagError(name, f"--{name}={setting(name)} must be 0 (all) or more")
    for rate in setting("robustness_rates"):
        try:
            value = float(rate)
        except ValueError:
            value = -1.0
        if not 0 < value <= 1:
            raise FlagError("robustness_rates", f"--robustness_rates: {rate!r} is not a rate in (0, 1]")
    data_dir = data_source()
    validation.split_files(data_dir, ("train", "dev"), FLAGS.task_name)
    processor_from_flags(FLAGS)  # --labels and the columns
    validation.model_path("init_checkpoint", teacher_init())
    validation.positive("teacher_learning_rate", setting("teacher_learning_rate"))
    if not os.path.isfile(FLAGS.student_config):
        raise FlagError("student_config", f"--student_config={FLAGS.student_config!r} is not a file")
    errors.read_json(FLAGS.student_config, "--student_config")
    extra = stage_flags()
    validation.check_outputs({"output_dir": FLAGS.output_dir}, [data_dir, FLAGS.init_checkpoint, FLAGS.student_config])
    output_dir = os.path.abspath(FLAGS.output_dir)
    stages = build_stages(output_dir, extra)
    check_stage_names(stages, extra)
    orchestration.check_stages(stages)
    validation.writable_output("output_dir", FLAGS.output_dir, folder=True)  # created when locked
    if FLAGS.compare_with:
        if os.path.abspath(FLAGS.compare_with) == os.path.abspath(FLAGS.output_dir):
            raise FlagError("compare_with", "--compare_with names this run's own --output_dir: give another run")
        if not reference_models(FLAGS.compare_with):
            raise FlagError("compare_with", f"--compare_with={FLAGS.compare_with}: no exported model (no "
                                            f"<stage>/export/{EXPORT_INFO}); give the --output_dir of a finished run")
    return selected(stages, output_dir)


def teacher_config() -> BertConfig | None:
    """The config of the teacher's start when it is a model folder (None: the default MiniLM, whose
    sizes the default student has, or a Google checkpoint)."""
    if not teacher_init():
        return None
    folder = model_packages.resolve_short_name(teacher_init()) or teacher_init()
    return config_from_json_file(os.path.join(folder, CONFIG)) if os.path.isdir(folder) else None


@functools.cache
def student_config() -> tuple[BertConfig, bool]:
    """The TinyBERT student's config (with the teacher's vocabulary size) and whether it is
    derived: without --student_config, a teacher whose sizes the default student lacks gives a
    student of the default's depth (at most the teacher's) with the teacher's sizes, so it can
    start from the teacher's layers."""
    student, teacher = BertConfig.from_json_file(FLAGS.student_config), teacher_config()
    if teacher is None:
        return student, False
    sizes = {name: getattr(teacher, name) for name in layer_map.INIT_SIZES}
    if FLAGS["student_config"].present or all(getattr(student, k) == v for k, v in sizes.items()):
        return dataclasses.replace(student, vocab_size=teacher.vocab_size), False
    layers = min(student.num_hidden_layers, teacher.num_hidden_layers)
    logging.info("The TinyBERT student takes the teacher's sizes (%s) with %d layers", sizes, layers)
    return dataclasses.replace(student, **sizes, num_hidden_layers=layers), True


def student_config_file(output_dir: str) -> str:
    """The --student_config of the tinybert stage (a derived config is written in `output_dir`)."""
    derived = student_config()[1]
    return os.path.join(output_dir, DERIVED_STUDENT_CONFIG) if derived else os.path.abspath(FLAGS.student_config)


def check_student(tinybert: flags.FlagValues) -> None:
    """A student that starts from the teacher's layers must have the teacher's sizes (`tinybert`:
    the tinybert stage's flags): refused before stage 1, not when the tinybert stage starts."""
    teacher = teacher_config()
    if teacher is None or tinybert.student_init != "teacher_layers":
        return
    try:
        layer_map.check_init_from_teacher(teacher, student_config()[0])
    except errors.ConfigError as e:
        raise FlagError("student_config", f"--student_config={FLAGS.student_config}: {e}",
                        hint="in this pipeline: --stage_flag=tinybert:--student_init=random") from None


def check_teacher_embeddings(teacher_export: str, lstm: flags.FlagValues) -> None:
    """A BiLSTM started from the input embeddings of the first teacher (`teacher_export`) needs
    --embedding_dim equal to the teacher's width (`lstm`: the bilstm_distil stage's flags):
    refused before the teacher is trained, not when the BiLSTM starts."""
    teacher = teacher_config()
    if teacher is None or os.path.abspath(lstm.word_vectors or "") != teacher_export:
        return
    if lstm.embedding_dim != teacher.hidden_size:
        raise errors.UserError(f"--word_vectors={lstm.word_vectors} gives the teacher's {teacher.hidden_size}-d "
                               f"input embeddings, not --embedding_dim={lstm.embedding_dim}",
                               hint=f"pass --stage_flag=bilstm_distil:--embedding_dim={teacher.hidden_size}")


def data_source() -> str | None:
    if FLAGS.data_dir:
        return FLAGS.data_dir
    return DEFAULT_DATA if own_files() is None and os.path.isdir(DEFAULT_DATA) else None


def own_files() -> str | None:
    """The file extension of a user's own task (--task_name=tsv|csv), None for SST-2."""
    return FLAGS.task_name.lower() if FLAGS.task_name.lower() in ("tsv", "csv") else None


def task_arguments() -> list[str]:
    """The task flags every stage's script gets."""
    return task_flag_arguments(FLAGS) + (["--skip_bad_rows"] if FLAGS.skip_bad_rows else [])


def data_task_key(task: list[str]) -> list[str]:
    """The task part of the data stage's record: none for plain SST-2, so folders recorded before
    tasks were flags are still recognised."""
    return [] if task == ["--task_name=sst-2"] else task


@functools.cache
def skipped_stages() -> dict[str, str]:
    """{stage: why} of the stages that cannot take this task (sentence pairs); asked once a run."""
    if processor_from_flags(FLAGS).text_inputs != TEXT_PAIR:
        return {}
    lstm_stages = ["transfer_bilstm"] * bool(setting("lstm_augment_factor")) + ["bilstm_gold", "bilstm_distil"]
    reason = {name: "the BiLSTM student reads single sentences; this task has sentence pairs" for name in lstm_stages}
    for name, student in PRESETS[FLAGS.preset]["students"].items():
        if any(flag.startswith("--student_model=") for flag in student):
            reason[name] = ("a student with its own vocabulary learns from single sentences only; this task has "
                            "sentence pairs")
    return reason


def data_folder(output_dir: str) -> str:
    """The folder every stage reads: --data_dir itself, or the pipeline's own copy (subsample, tfds)."""
    source = data_source()
    return source if source and not setting("max_train_examples") else os.path.join(output_dir, "data")


def write_data(output_dir: str) -> None:
    """`<output_dir>/data/{train,dev}.tsv`: a seeded train subsample (and tfds, read once); a
    user's own files (`own_files`) keep their format: the chosen lines of train, dev copied."""
    source, target = data_source(), os.path.join(output_dir, "data")
    if source and not setting("max_train_examples"):
        return
    if own_files():
        subsample_lines(source, target, own_files(), setting("max_train_examples"), np.random.default_rng(FLAGS.seed))
        return
    processor = data.Sst2Processor()
    train = processor.get_train_examples(source)
    limit = setting("max_train_examples")
    if limit and limit < len(train):
        keep = np.sort(np.random.default_rng(FLAGS.seed).choice(len(train), limit, replace=False))
        train = [train[i] for i in keep]
    os.makedirs(target, exist_ok=True)
    for split, examples in (("train", train), ("dev", processor.get_dev_examples(source))):
        with atomic_output(os.path.join(target, f"{split}.tsv")) as f:
            f.write("sentence\tlabel\n" + "".join(f"{e.text_a}\t{e.label}\n" for e in examples))
    logging.info("data: %d train rows (of %s) in %s", len(train), source or "tfds glue/sst2", target)


def subsample_lines(source: str, target: str, extension: str, limit: int, rng: np.random.Generator) -> None:
    """`train.<extension>` with `limit` of its non-blank lines (seeded, in file order; the header
    kept), `dev.<extension>` as it is."""
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(source, f"train.{extension}"), encoding="utf-8", newline="") as f:
        lines = f.readlines()
    head, rows = (lines[:1], lines[1:]) if FLAGS.has_header else ([], lines)
    rows = [line if line.endswith("\n") else line + "\n" for line in rows if line.strip()]
    if limit < len(rows):
        rows = [rows[i] for i in np.sort(rng.choice(len(rows), limit, replace=False))]
    with atomic_output(os.path.join(target, f"train.{extension}")) as f:
        f.write("".join(head + rows))
    shutil.copyfile(os.path.join(source, f"dev.{extension}"), os.path.join(target, f"dev.{extension}"))
    logging.info("data: %d train rows of %s in %s", len(rows), source, target)


def script_stage(name: str, path: str, *args: str,
                 also_check: Callable[[flags.FlagValues], None] | None = None, **kwargs) -> orchestration.Stage:
    """A stage running the script `path` (relative to the repository, as its record names it, so
    a moved checkout still finds its completed stages) with `args`; the script's
    own flag checks (`script_flags`), then `also_check` of the parsed flags (what the pipeline
    knows about its other stages), run before the pipeline starts."""
    def check() -> None:
        parsed = script_flags.check_arguments(path, args)
        if also_check:
            also_check(parsed)

    return orchestration.Stage(name, command=[os.path.join(REPO, path), *args], key=[path, *args], check=check,
                               **kwargs)


def build_stages(output_dir: str, extra: dict[str, list[str]]) -> list[orchestration.Stage]:
    """The chain's stages (all of them: --stages picks which run), with the --stage_flag values
    `extra` (`stage_flags()`)."""
    minutes = PRESETS[FLAGS.preset]["minutes"]
    data_dir = data_folder(output_dir)
    seed = FLAGS.seed
    teacher_names = [f"teacher_{k}" for k in range(1, setting("num_teachers") + 1)]
    teachers = [os.path.join(output_dir, name) for name in teacher_names]
    task = task_arguments()
    transfer = os.path.join(output_dir, "transfer", "augmented.tsv")
    stages = [orchestration.Stage("data", function=lambda: write_data(output_dir), nominal_minutes=minutes["data"],
                                  key=[data_source() or "tfds", str(setting("max_train_examples")), str(seed),
                                       *data_task_key(task)],
                                  description=f"train subsample of {setting('max_train_examples')}"
                                  if setting("max_train_examples") else "")]
    teacher_start = teacher_init()
    init = [f"--init_checkpoint={teacher_start}"] if teacher_start else []
    gate = f"--int8_max_drop={FLAGS.int8_max_drop}"
    keep_float = setting("teacher_int8_keep_float")
    teacher_int8 = [f"--int8_keep_float={keep_float}"] if keep_float else []
    for k, folder in enumerate(teachers):
        stages.append(script_stage(
            f"teacher_{k + 1}", "bert_finetune/run_classifier.py", *task, "--do_train", "--do_eval",
            f"--data_dir={data_dir}", f"--output_dir={folder}", "--max_seq_length=128", "--train_batch_size=32",
            "--eval_batch_size=64", f"--learning_rate={setting('teacher_learning_rate')}",
            f"--mixed_precision={setting('teacher_precision')}", f"--num_train_epochs={setting('teacher_epochs')}",
            "--warmup_proportion=0.1", "--save_checkpoints_steps=500", "--classifier_pooling=mean",
            f"--seed={seed + k}", gate, *teacher_int8, *init, *flags_of_stage(extra, f"teacher_{k + 1}"),
            reads=["data"],
            nominal_minutes=minutes["teacher"], description=f"seed {seed + k}"))
    exports = [os.path.join(folder, "export") for folder in teachers]

    def transfer_stage(name: str, output: str, factor: int, *own_flags: str, **kwargs) -> orchestration.Stage:
        """A transfer set of `factor` new sentences per train sentence, labelled by every teacher."""
        return script_stage(name, "generate_dataset.py", *task, f"--input={data_dir}", f"--model={','.join(exports)}",
                            f"--output={output}", f"--augment_factor={factor}", f"--seed={seed}", *own_flags,
                            *flags_of_stage(extra, name), reads=["data", *teacher_names], **kwargs)

    stages.append(transfer_stage(
        "transfer", transfer, setting("augment_factor"),
        nominal_minutes=minutes["transfer"] * len(exports),  # labelling dominates: one pass per teacher
        description=f"{len(exports)} teacher(s)"))
    lstm_factor = setting("lstm_augment_factor")  # 0: the BiLSTM reads the shared transfer set
    lstm_transfer_stage = "transfer_bilstm" if lstm_factor else "transfer"
    lstm_transfer = os.path.join(output_dir, lstm_transfer_stage, "augmented.tsv")
    if lstm_factor:
        stages.append(transfer_stage(
            lstm_transfer_stage, lstm_transfer, lstm_factor, f"--mixed_precision={setting('lstm_transfer_precision')}",
            nominal_minutes=minutes.get("transfer_bilstm", minutes["transfer"] * lstm_factor
                                        / setting("augment_factor")) * len(exports),
            description=f"the BiLSTM's, x{lstm_factor}"))
    lstm = [*task, f"--data_dir={data_dir}", "--save_checkpoints_steps=2000", f"--seed={seed}", gate]
    stages.append(script_stage(
        "bilstm_gold", "distil_lstm/main.py", "--mode=train", f"--output_dir={os.path.join(output_dir, 'bilstm_gold')}",
        f"--num_train_epochs={setting('lstm_epochs')}", "--early_stopping_patience=3", *lstm,
        *flags_of_stage(extra, "bilstm_gold"), reads=["data"], nominal_minutes=minutes["bilstm_gold"]))
    stages.append(script_stage(
        "bilstm_distil", "distil_lstm/main.py", "--mode=distil",
        f"--output_dir={os.path.join(output_dir, 'bilstm_distil')}", f"--augmented_file={lstm_transfer}",
        f"--num_train_epochs={setting('lstm_distil_epochs')}", *lstm,
        *student_flags(PRESETS[FLAGS.preset]["lstm_distil_flags"], output_dir), *flags_of_stage(extra, "bilstm_distil"),
        also_check=functools.partial(check_teacher_embeddings, exports[0]), reads=["data", lstm_transfer_stage],
        nominal_minutes=minutes["bilstm_distil"]))
    subset = setting("intermediate_max_examples")
    descriptions = {}  # the TinyBERT students' in the report
    for name, student in PRESETS[FLAGS.preset]["students"].items():
        own = [*student_flags(student, "."), *flags_of_stage(extra, name)]
        runs = tinybert_stages(own)
        stage1 = runs != "prediction"  # stage 1 (intermediate layers) runs
        descriptions[name] = tinybert_description(own)
        stages.append(script_stage(
            name, "tinybert/task_distill.py", *task, f"--teacher_model={exports[0]}",
            *(student_flags(student, output_dir) or [f"--student_config={student_config_file(output_dir)}"]),
            f"--data_dir={data_dir}",
            f"--augmented_file={transfer}", f"--output_dir={os.path.join(output_dir, name)}",
            *([f"--intermediate_epochs={setting('intermediate_epochs')}"] if stage1 else []),
            f"--prediction_epochs={setting('prediction_epochs')}",
            *([f"--intermediate_max_examples={subset}"] if subset and stage1 else []),
            "--max_seq_length=128", "--train_batch_size=32", "--save_checkpoints_steps=1000",
            f"--mixed_precision={setting('student_precision')}", f"--seed={seed}", gate, *flags_of_stage(extra, name),
            also_check=None if student else check_student, reads=["data", *teacher_names, "transfer"],
            nominal_minutes=minutes.get(name) or minutes["tinybert"],
            description=STAGE_WORDS.get(runs, "")))
    stages = [stage for stage in stages if stage.name not in skipped_stages()]
    names = [stage.name for stage in stages]  # the records the report quotes
    stages.append(orchestration.Stage(
        "report", function=lambda: make_report(output_dir, teachers, names, descriptions),
        nominal_minutes=minutes["report"],
        key=[str(setting(n)) for n in ("robustness_examples", "robustness_rates", "speed_rounds", "latency_texts")],
        follows_earlier=True, reads=teacher_names))
    return stages


def family(stage: str) -> str:
    """teacher_2 -> teacher, tinybert_3l -> tinybert: the --stages name of a stage."""
    return stage.split("_")[0] if stage.startswith(("teacher_", "tinybert_")) else stage


def chosen_by_stages(name: str) -> bool:
    """Whether --stages runs stage `name` (by its --stages name or its own)."""
    return FLAGS.stages is None or family(name) in FLAGS.stages or name in FLAGS.stages


def selected(stages: list[orchestration.Stage], output_dir: str) -> list[orchestration.Stage]:
    """The stages --stages names, after checking that what they read is complete or runs first
    (nothing is complete when --overwrite_output_dir starts over)."""
    chosen = [stage for stage in stages if chosen_by_stages(stage.name)]
    for stage in chosen:
        missing = [name for name in stage.reads
                   if not chosen_by_stages(name) and (FLAGS.overwrite_output_dir
                                                      or orchestration.read_record(output_dir, name) is None)]
        if missing:
            need = family(missing[0])  # the first --stages name missing, with its stages
            names = [name for name in missing if family(name) == need]
            state = "--overwrite_output_dir clears from" if FLAGS.overwrite_output_dir else "is not complete in"
            raise FlagError("stages", f"--stages: {stage.name} reads the output of {', '.join(names)}, "
                                      f"which {state} {output_dir}; add {need} to --stages")
    return chosen


# How a student's own flags read in its report description.
FLAG_WORDS = {"--student_model=": "from ", "--student_layers=": "layers ",
              "--prediction_learning_rate=": "learning rate ", "--layer_map=": "layer map "}
STAGE_WORDS = {"both": "stage 1 + 2", "intermediate": "stage 1", "prediction": "stage 2"}


def tinybert_description(flags_of: list[str]) -> str:
    """A TinyBERT student in the report: its stages and the flags that make it."""
    start = " ".join(flag for flag in flags_of if not flag.startswith("--stage="))
    for flag, words in FLAG_WORDS.items():
        start = start.replace(flag, words)
    stages = STAGE_WORDS.get(tinybert_stages(flags_of), "")
    return f"TinyBERT, {stages} on the transfer set{', ' + start if start else ''}"


def bilstm_description() -> str:
    """The distilled BiLSTM in the report: which transfer set, which start."""
    factor = setting("lstm_augment_factor")
    words = f"its own x{factor} transfer set" if factor else "the transfer set"
    start = (", from the teacher's input embeddings" if any(
        flag.startswith("--word_vectors=") for flag in PRESETS[FLAGS.preset]["lstm_distil_flags"]) else "")
    return f"BiLSTM distilled on {words}{start}"


def models_of(output_dir: str, teachers: list[str], descriptions: dict[str, str]) -> list[report.ReportModel]:
    """The report's models: every teacher and each student stage that has an export
    (`descriptions`: the TinyBERT students')."""
    def seconds(stage: str) -> float | None:
        record = orchestration.read_record(output_dir, stage)
        return record["seconds"] if record else None

    models = [report.ReportModel(os.path.basename(t), os.path.join(t, "export"), "teacher",
                                 f"run_classifier, seed {FLAGS.seed + k}", seconds(os.path.basename(t)))
              for k, t in enumerate(teachers)]
    students = [("bilstm_gold", "BiLSTM, gold labels"), ("bilstm_distil", bilstm_description()), *descriptions.items()]
    for name, description in students:
        export_dir = os.path.join(output_dir, name, "export")
        if os.path.isfile(os.path.join(export_dir, EXPORT_INFO)):
            models.append(report.ReportModel(name, export_dir, "student", description, seconds(name)))
    return models


def reference_models(run_dir: str) -> list[report.ReportModel]:
    """The exported models of another pipeline run, in the chain's order, named
    `<its folder name>:<stage>`, with the description its own report gave them."""
    label = os.path.basename(os.path.normpath(run_dir))
    described = {}
    results_file = os.path.join(run_dir, "report", "results.json")
    if os.path.isfile(results_file):
        described = {name: entry.get("description", "") for name, entry in
                     errors.read_json(results_file, "--compare_with's report").get("models", {}).items()}
    order = {name: i for i, name in enumerate(STAGE_NAMES)}
    stages = sorted((name for name in os.listdir(run_dir) if os.path.isfile(os.path.join(run_dir, name, "export",
                                                                                          EXPORT_INFO))),
                    key=lambda name: (order.get(family(name), len(order)), name)) if os.path.isdir(run_dir) else []
    return [report.ReportModel(f"{label}:{name}", os.path.join(run_dir, name, "export"), "reference",
                               described.get(name) or name,
                               (orchestration.read_record(run_dir, name) or {}).get("seconds")) for name in stages]


def make_report(output_dir: str, teachers: list[str], stage_names: list[str], descriptions: dict[str, str]) -> None:
    """The report of this run's exports (and --compare_with's); `stage_names`: the stages whose
    records it quotes; `descriptions`: the TinyBERT students'."""
    models = [*models_of(output_dir, teachers, descriptions),
              *(reference_models(FLAGS.compare_with) if FLAGS.compare_with else [])]
    missing = [t for t in teachers if not os.path.isdir(os.path.join(t, "export"))]
    if missing:
        raise errors.UserError(f"the report needs the teachers' exports; missing: {', '.join(missing)}",
                               hint="run the teacher stages first")
    dev = processor_from_flags(FLAGS).get_dev_examples(data_folder(output_dir))
    settings = report.ReportSettings(speed_rounds=setting("speed_rounds"), latency_texts=setting("latency_texts"),
                                     robustness_examples=setting("robustness_examples") or None,
                                     robustness_rates=tuple(float(r) for r in setting("robustness_rates")),
                                     seed=FLAGS.seed)
    provenance = {"command": sys.argv, "preset": FLAGS.preset,
                  "stages": {name: record for name in stage_names
                             if (record := orchestration.read_record(output_dir, name))},
                  "transfer_set_teachers": [os.path.basename(t) for t in teachers],
                  "compare_with": os.path.abspath(FLAGS.compare_with) if FLAGS.compare_with else None,
                  "skipped_stages": skipped_stages()}
    neighbours = robustness.load_neighbours(model_dir=os.path.join(teachers[0], "export"))
    results = report.build(models, [e.text_a if e.text_b is None else (e.text_a, e.text_b) for e in dev],
                           [e.label for e in dev], settings=settings,
                           neighbours=neighbours, provenance=provenance)
    paths = report.write(results, os.path.join(output_dir, "report"))
    print(report.markdown(results), flush=True)
    logging.info("report: %s", ", ".join(paths))


def main(argv):
    del argv
    chosen = validate()
    output_dir = os.path.abspath(FLAGS.output_dir)
    locks.lock_folder(output_dir)  # the stages lock their own folders inside it
    if FLAGS.overwrite_output_dir:
        manifest.clear_folder(output_dir)
    for name, reason in skipped_stages().items():
        print(f"[pipeline] stage {name}: skipped: {reason}", flush=True)
    report_by_name = bool(FLAGS.stages) and "report" in FLAGS.stages  # asked for by name: made again
    # Before this run writes anything in the folder:
    orchestration.check_records(output_dir, [stage for stage in chosen
                                             if not (report_by_name and stage.name == "report")])
    os.makedirs(output_dir, exist_ok=True)
    if report_by_name:
        path = orchestration.record_path(output_dir, "report")
        if os.path.exists(path):
            os.remove(path)
    config, derived = student_config()
    if derived:
        with atomic_output(os.path.join(output_dir, DERIVED_STUDENT_CONFIG)) as f:
            json.dump(config.to_dict(), f, indent=2)
    with atomic_output(os.path.join(output_dir, "pipeline_flags.json")) as f:
        json.dump({"preset": FLAGS.preset, **{name: setting(name) for name in PRESETS[FLAGS.preset] if name != "minutes"}},
                  f, indent=2)
    orchestration.Runner(output_dir, chosen).run()


if __name__ == "__main__":
    entry.run(main)
