"""How a sequence classifier turns token states into logits: part of the artifact's contract.

- "cls": the model's own head (`BertForSequenceClassification`: the [CLS] state through the
  pooler's dense + tanh layer, then the classifier).
- "mean": the mean of the last hidden states over the attention mask, then dropout and the same
  `classifier` layer. Sentence encoders (all-MiniLM-L6-v2, multilingual-e5) were trained with mean
  pooling, and e5's published weights have no pooler at all, so the "cls" head starts from a
  random pooler there.

The weights keep the transformers layout in both cases (`bert.*`, `classifier.*`), so
`AutoModelForSequenceClassification` loads either; only the forward differs. The manifest's
`rules.pooling` says which one an artifact uses; training, ONNX export and the torch backend all
call `classifier_logits`, so the three cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from serving.contract.artifact import Pooling

POOLINGS: tuple[Pooling, ...] = ("cls", "mean")


def check_poolable(model: Any, pooling: str) -> None:
    """Raise ValueError when `model` cannot run with `pooling`."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
    if pooling == "cls":
        return
    import torch

    head = getattr(model, "classifier", None)
    if not isinstance(head, torch.nn.Linear):
        raise ValueError(
            f"pooling 'mean' needs a model whose classifier is one linear layer (BERT-style); "
            f"{type(model).__name__}.classifier is {type(head).__name__}"
        )


def classifier_logits(
    model: Any, input_ids: Any, attention_mask: Any, pooling: str, token_type_ids: Any = None
) -> Any:
    """Logits of a transformers sequence classifier under `pooling` (torch tensors in and out)."""
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        kwargs["token_type_ids"] = token_type_ids
    if pooling == "cls":
        out = model(**kwargs)
        return out.logits if hasattr(out, "logits") else out[0]
    out = model.base_model(**kwargs)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    dropout = getattr(model, "dropout", None)
    if dropout is not None:
        pooled = dropout(pooled)
    return model.classifier(pooled)


def pooled_module(model: Any, pooling: str) -> Any:
    """A torch module whose forward(input_ids, attention_mask, token_type_ids) returns logits.

    ONNX export traces this, so the exported graph contains the pooling and the serving ONNX
    backend needs to know nothing about it.
    """
    import torch

    check_poolable(model, pooling)

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return classifier_logits(
                self.inner, input_ids, attention_mask, pooling, token_type_ids=token_type_ids
            )

    return Pooled()
