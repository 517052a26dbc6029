"""The jobs: teacher fine-tuning and TinyBERT task distillation as Tasks that build inputs, build
and initialize their model, train, evaluate and export; `runner.run` drives any Task.
"""
