"""The encoder families the toolkit builds (BERT, MPNet), chosen by a config's `model_type`."""

from __future__ import annotations

from typing import Any

from bertdistill.models.bert import BertConfig, BertEncoder, read_config_json
from bertdistill.errors import ConfigError
from bertdistill.models.mpnet import MPNetConfig, MPNetEncoder

CONFIGS: dict[str, type[BertConfig]] = {"bert": BertConfig, "mpnet": MPNetConfig}
_ENCODERS = {BertConfig: BertEncoder, MPNetConfig: MPNetEncoder}


def config_from_dict(values: Any, source: str = "config") -> BertConfig:
    """A `BertConfig` or `MPNetConfig` by the dict's `model_type` (absent: BERT, as Google's
    `bert_config.json`); another model type is a `ConfigError` naming it."""
    model_type = values.get("model_type", "bert") if isinstance(values, dict) else "bert"
    if model_type not in CONFIGS:
        raise ConfigError(f"{source}: model_type {model_type!r} is not supported; expected one of "
                          f"{', '.join(sorted(CONFIGS))}")
    return CONFIGS[model_type].from_dict(values, source=source)


def config_from_json_file(path: str) -> BertConfig:
    """Reads `bert_config.json` or a Hugging Face `config.json` of a BERT or an MPNet."""
    return config_from_dict(read_config_json(path), source=path)


def build_encoder(config: BertConfig, output_hidden_states: bool = False, output_attentions: bool = False,
                  **kwargs) -> BertEncoder | MPNetEncoder:
    """The encoder of `config`'s family, with every layer's outputs on request."""
    return _ENCODERS[type(config)](config, output_hidden_states=output_hidden_states,
                                   output_attentions=output_attentions, **kwargs)
