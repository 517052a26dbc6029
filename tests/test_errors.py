"""entry.run: user errors give one `error:` line and status 2, bugs a traceback and status 1."""
import os
import subprocess
import sys
import textwrap

import pytest

from bertdistill import errors
from bertdistill.cli import entry

from bertdistill.data import data
from tests.conftest import REPO

SCRIPT = textwrap.dedent('''
    import json, os
    from absl import app, flags
    from bertdistill import errors
    from bertdistill.cli import entry
    from bertdistill.data import data

    flags.DEFINE_string("kind", "ok", "What to raise.")
    flags.DEFINE_integer("n", 1, "A number.")

    def main(argv):
        kind = flags.FLAGS.kind
        if kind == "user":
            raise errors.UserError("bad thing in x.cfg", hint="fix it")
        if kind == "flag":
            raise errors.FlagError("learning_rate", "must be positive")
        if kind == "field":
            raise errors.ConfigFieldError("max_seq_length", f"{errors.field('max_seq_length')}=600 exceeds what "
                                                            f"{errors.field('teacher')} takes")
        if kind == "usage":
            raise app.UsageError("--output_dir is required")
        if kind == "data":
            with open("train.tsv", "w") as f:
                f.write("sentence\\tlabel\\ngood\\t7\\n")
            data.get_processor("sst-2").get_train_examples(".")
        if kind == "task":
            data.get_processor("mnli")
        if kind == "missing":
            open("no/such/file.txt")
        if kind == "permission":
            raise PermissionError(13, "Permission denied", "/root/secret")
        if kind == "isadir":
            open(".")
        if kind == "notadir":
            open(os.path.join(__file__, "x"))
        if kind == "json":
            with open("bad.json", "w") as f:
                f.write("{oops")
            with open("bad.json") as f:
                json.load(f)
        if kind == "illegal":
            flags.FLAGS["n"].parse("many")
        if kind == "long":
            raise errors.UserError(f"bad row {errors.shorten('x' * 5000)!s}")
        if kind == "multiline":
            raise errors.UserError("first line\\nsecond line")
        if kind == "bug":
            return 1 / 0
        print("ran")

    if __name__ == "__main__":
        entry.run(main, flag_names={"teacher": "teacher_model"})
''')


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    folder = tmp_path_factory.mktemp("errors")
    path = folder / "tool.py"
    path.write_text(SCRIPT)
    return path


def run(script, *args, env=None):
    environ = {key: value for key, value in os.environ.items() if key != errors.VERBOSE_ENV}
    environ.update({"PYTHONPATH": str(REPO), **(env or {})})
    result = subprocess.run([sys.executable, str(script), *args], cwd=script.parent, env=environ,
                            capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout, result.stderr


def assert_one_line(status, stderr, *fragments):
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("kind, fragments", [
    ("user", ["error: bad thing in x.cfg; fix it"]),
    ("flag", ["--learning_rate: must be positive"]),
    ("field", ["error: --max_seq_length=600 exceeds what --teacher_model takes"]),
    ("usage", ["--output_dir is required"]),
    ("data", ["train.tsv:2: unknown label '7'"]),
    ("task", ["--task_name", "unknown task 'mnli'"]),
    ("missing", ["not found: no/such/file.txt"]),
    ("permission", ["permission denied: /root/secret"]),
    ("isadir", ["is a folder where a file was expected"]),
    ("notadir", ["a part of this path is a file"]),
    ("json", ["bad.json:1:2: invalid JSON"]),
    ("illegal", ["--n=many"]),
    ("multiline", ["first line; second line"]),
])
def test_user_errors_print_one_line_and_exit_2(script, kind, fragments):
    status, _, stderr = run(script, f"--kind={kind}")
    assert_one_line(status, stderr, *fragments)


@pytest.mark.parametrize("args, fragment", [
    (["--n=abc"], "--n=abc"),
    (["--no_such_flag"], "Unknown command line flag 'no_such_flag'"),
])
def test_flag_parsing_errors_print_one_line_and_exit_2(script, args, fragment):
    status, stdout, stderr = run(script, *args)
    assert_one_line(status, stderr, fragment, "--helpshort")
    assert "ran" not in stdout


def test_verbose_errors_show_the_traceback(script):
    for args, env in ((["--kind=user", "--verbose_errors"], None), (["--kind=user"], {errors.VERBOSE_ENV: "1"}),
                      (["--n=abc", "--verbose_errors"], None)):
        status, _, stderr = run(script, *args, env=env)
        assert status == 2 and "Traceback" in stderr, stderr
        assert stderr.strip().splitlines()[-1].startswith("error: ")


def test_bugs_keep_their_traceback(script):
    status, _, stderr = run(script, "--kind=bug")
    assert status == 1
    assert "Traceback" in stderr and "ZeroDivisionError" in stderr and "error: " not in stderr


def test_success(script):
    assert run(script)[:2] == (0, "ran\n")


def test_long_input_is_quoted_shortened(script):
    status, _, stderr = run(script, "--kind=long")
    line = assert_one_line(status, stderr, "[4800 more characters]")
    assert len(line) < 300


def test_shorten_and_one_line():
    assert errors.shorten("abc") == "abc"
    assert errors.shorten("a\nb") == "a\\nb"
    assert errors.shorten("x" * 250) == "x" * 200 + "... [50 more characters]"
    assert errors.one_line("a\n\n  b  \n") == "a; b"


def test_error_classes_stay_what_callers_catch():
    assert issubclass(data.DataFormatError, errors.UserError) and issubclass(data.DataFormatError, ValueError)
    missing = errors.MissingFileError("data file not found: x")
    assert isinstance(missing, FileNotFoundError) and str(missing) == "data file not found: x"
    assert isinstance(errors.DataUnavailableError("no tfds"), RuntimeError)
    assert str(errors.FlagError("--seed", "--seed=x is bad")) == "--seed=x is bad"
    assert errors.is_user_error(errors.ConfigError("c")) and not errors.is_user_error(ZeroDivisionError())


def test_read_json_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{bad")
    with pytest.raises(errors.ConfigError, match=r"config\.json: model config is not valid JSON"):
        errors.read_json(str(path), "model config")
    with pytest.raises(errors.MissingFileError, match="model config not found"):
        errors.read_json(str(tmp_path / "none.json"), "model config")


def test_define_flags_is_idempotent():
    entry.define_flags()
    entry.define_flags()


def test_library_errors_name_config_fields():
    error = errors.ConfigFieldError("max_seq_length", f"{errors.field('max_seq_length')}=600 exceeds 512")
    assert str(error) == "max_seq_length=600 exceeds 512" and error.field == "max_seq_length"
    assert errors.message(error, {}) == "--max_seq_length=600 exceeds 512"
    assert str(errors.ConfigFieldError("seed", "must be an integer")) == "seed: must be an integer"
    wrapped = errors.UserError(f"stage a: {errors.detail(error)}")  # a wrapping error keeps the reference
    assert errors.message(wrapped, {"max_seq_length": "length"}) == "stage a: --length=600 exceeds 512"
    assert errors.render(errors.shorten(errors.field("x"))) != "x"  # quoted input is never a reference


def test_importing_the_predictor_defines_no_flag():
    code = ("from absl import flags; before = set(flags.FLAGS); import bertdistill.serving.predictor; "
            "print(sorted(set(flags.FLAGS) - before))")
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
