"""INT8 accuracy (and speed) of a transformer export by which weight MatMuls stay in float32.

    python benchmarks/int8_float_layers.py --model_dir=outputs/large/teacher_1/export \
        --keep_float=ffn_outputs:2 --keep_float=none --keep_float=value,attention_output --accuracy_only

Each `--keep_float` is one setting of the exporters' `--int8_keep_float` (comma-separated parts,
each `ffn_outputs:N`, the feed-forward output projections of the first N layers, or a layer name:
`query`, `key`, `value`, `attention_output`, `intermediate`, `output`, `pooler`, `classifier`; `none`
quantizes every weight MatMul). Each setting
quantizes the export's `model.onnx` again (in a temporary folder beside links to the export's
other files) and measures SST-2 dev accuracy, and unless `--accuracy_only` both models' speed as
the INT8 gate does (interleaved in one process). `--agreement_texts=N` also measures, on the first
N sentences of `--agreement_split` (not dev, so it can choose a setting without tuning on dev), how
often INT8 predicts float32's label and their mean absolute logit difference: `test` (unlabelled,
never trained on) for a student whose transfer set holds every train sentence. The export is not
changed.
"""

from __future__ import annotations

import json
import os
import tempfile

from absl import app, flags

from bertdistill.cli.shared_flags import define_flag

from bertdistill.data import data
from bertdistill.export.export import kept_float_matmuls, quantize_onnx_int8
from bertdistill.export.int8_gate import dev_accuracy, gate_verdict, measure_models
from bertdistill.export_format import MODEL_FILES, keep_float_parts, load_export_info
from bertdistill.files import atomic_output
from bertdistill.serving.predictor import Predictor

define_flag("model_dir", help="A transformer export folder (its model.onnx optimized by onnxruntime).")
define_flag("data_dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "sst2"),
            help="GLUE SST-2 folder (dev.tsv).")
flags.DEFINE_multi_string("keep_float", ["ffn_outputs:2"], "One setting: the weight MatMuls kept in float32 "
                          "(see the module docstring); repeat for several settings.")
flags.DEFINE_bool("accuracy_only", False, "Measure INT8 dev accuracy only (no timing).")
flags.DEFINE_integer("agreement_texts", 0, "Also measure INT8's agreement with float32 on this many sentences "
                     "of --agreement_split (0: off).", lower_bound=0)
flags.DEFINE_enum("agreement_split", "train", ["train", "test"], "The split whose first --agreement_texts "
                  "sentences measure the agreement (test: unlabelled, never trained on).")
define_flag("threads")
define_flag("output", help="Also write the results here (JSON).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    for setting in FLAGS.keep_float:
        try:
            keep_float_parts(setting)
        except ValueError as e:
            raise app.UsageError(f"--keep_float={setting}: {e}") from None
    info = load_export_info(FLAGS.model_dir)
    processor = data.Sst2Processor()
    texts, labels = zip(*[(e.text_a, e.label) for e in processor.get_dev_examples(FLAGS.data_dir)])
    onnx_path = os.path.join(FLAGS.model_dir, MODEL_FILES["float32"])
    float32_accuracy = (info.get("int8_gate") or {}).get("float32_accuracy")
    split = FLAGS.agreement_split
    examples = processor.get_train_examples if split == "train" else processor.get_test_examples
    sentences = [e.text_a for e in examples(FLAGS.data_dir)[:FLAGS.agreement_texts]] if FLAGS.agreement_texts else []
    float32_logits = (Predictor(FLAGS.model_dir, quantized=False, threads=FLAGS.threads).logits_of(sentences)
                      if sentences else None)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for name in os.listdir(FLAGS.model_dir):
            if name != MODEL_FILES["int8"]:
                os.symlink(os.path.abspath(os.path.join(FLAGS.model_dir, name)), os.path.join(folder, name))
        for setting in FLAGS.keep_float:
            kept = kept_float_matmuls(onnx_path, setting)
            quantize_onnx_int8(onnx_path, os.path.join(folder, MODEL_FILES["int8"]), nodes_to_exclude=kept)
            if FLAGS.accuracy_only:
                if float32_accuracy is None:
                    float32_accuracy = dev_accuracy(Predictor(folder, quantized=False, threads=FLAGS.threads),
                                                    texts, labels)
                int8 = dev_accuracy(Predictor(folder, quantized=True, threads=FLAGS.threads), texts, labels)
                row = {"float32_accuracy": float32_accuracy, "int8_accuracy": int8, "drop": float32_accuracy - int8}
            else:
                measured = measure_models(folder, texts, labels, FLAGS.threads)
                row = gate_verdict(measured["float32"], measured["int8"],
                                   (info.get("int8_gate") or {}).get("max_drop", 0.5))
            if sentences:
                int8_logits = Predictor(folder, quantized=True, threads=FLAGS.threads).logits_of(sentences)
                row[f"{split}_agreement"] = 100 * float((int8_logits.argmax(1) == float32_logits.argmax(1)).mean())
                row[f"{split}_mean_abs_logit_diff"] = float(abs(int8_logits - float32_logits).mean())
            results.append({"keep_float": setting, "float_matmuls": len(kept), "excluded": kept, **row})
            timing = "" if FLAGS.accuracy_only else (
                f"; latency {row['int8_latency_ms']:.2f} vs {row['float32_latency_ms']:.2f} ms, "
                f"{row['int8_examples_per_s']:.0f} vs {row['float32_examples_per_s']:.0f} examples/s")
            agreement = "" if not sentences else (f"; agrees with float32 on {row[f'{split}_agreement']:.2f}% of "
                                                  f"{len(sentences)} {split} sentences (mean |logit diff| "
                                                  f"{row[f'{split}_mean_abs_logit_diff']:.4f})")
            print(f"keep float {setting} ({len(kept)} MatMuls): INT8 {row['int8_accuracy']:.2f} (float32 "
                  f"{row['float32_accuracy']:.2f}, drop {row['drop']:.2f}){timing}{agreement}", flush=True)
    if FLAGS.output:
        with atomic_output(FLAGS.output) as out:
            json.dump({"model_dir": FLAGS.model_dir, "results": results}, out, indent=1)


if __name__ == "__main__":
    flags.mark_flag_as_required("model_dir")
    app.run(main)
