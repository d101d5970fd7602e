"""Fine-tune a transformer for multi-label classification (one sigmoid per label).

Class imbalance: BCE with per-label pos_weight (negatives/positives, capped). Noise augmentation
happens here, at training time, on the raw fields before the shared text builder: casing, HTML
remnants, dropped fields and truncation. Early stopping watches validation macro PR-AUC. Batches
are length-bucketed (shuffled within buckets, buckets shuffled) so CPU time is not spent on padding.
Seeds fix data order, dropout and head initialisation; on CPU two runs give the same metrics.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from serving.backends.pooling import check_poolable, classifier_logits
from serving.contract.errors import ConfigError
from serving.contract.specs import ModelInput
from serving.contract.text import build_text
from training.base_models import resolve_base_model, text_prefix
from training.config import Config
from training.vocab import extend_vocabulary, merge_embeddings, split_embeddings

log = logging.getLogger(__name__)
_HTML_NOISE = ["<br>", "<br/>", "&amp;", "<p>", "</li><li>", "&nbsp;", "<b>", "&quot;"]


def model_text_prefix(cfg: Config) -> str:
    """The configured text prefix, or the one the base model expects."""
    if cfg.model.text_prefix is not None:
        return cfg.model.text_prefix
    return text_prefix(cfg.model.base_model)


def cfg_model_input(cfg: Config) -> ModelInput:
    """What the transformer reads for a built text under this config (as serving builds it)."""
    return ModelInput(prefix=model_text_prefix(cfg), spec_hints=cfg.model.spec_hints)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# Shop names, prices and RDF language tags for the web-offer perturbation: offers scraped from
# schema.org markup arrive as `"Title"@en-gb Title tail | £304.99 Shop UK"@en-gb`.
_SHOPS = [
    "Overclockers UK",
    "LambdaTek",
    "Cyberport",
    "Ebuyer",
    "Alternate DE",
    "Misco",
    "Dabs",
    "CCL Online",
    "Box.co.uk",
]
_LANG_TAGS = ["en", "en", "en-gb", "en-us", "de"]
_PUNCT_RE = re.compile(r"\s*([()\[\],;:!?/+])\s*")


def web_offer(title: str, rng: random.Random) -> str:
    """Return `title` as a scraped web-shop offer: quoted, language-tagged, with shop and price."""
    tag = rng.choice(_LANG_TAGS)
    words = title.split()
    out = f'"{title}"@{tag}'
    if len(words) > 2 and rng.random() < 0.5:
        out += " " + " ".join(words[rng.randrange(1, len(words)) :])
    if rng.random() < 0.7:
        price = f"{rng.choice('£€$')}{rng.randint(5, 2999)}.{rng.randint(0, 99):02d}"
        out += f" | {price} {rng.choice(_SHOPS)}" + (f'"@{tag}' if rng.random() < 0.6 else "")
    return out


def benchmark_tokens(text: str) -> str:
    """Return `text` as product-matching benchmarks store it: lower case, punctuation spaced."""
    return _PUNCT_RE.sub(r" \1 ", text.lower()).strip()


def augment_fields(row: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Return a noisy copy of a listing's fields (one or two perturbations)."""
    out = {k: row.get(k, "") for k in ("title", "description", "brand", "seller_category")}
    for _ in range(rng.choice((1, 1, 2))):
        kind = rng.random()
        if kind < 0.2:
            case = rng.choice((str.upper, str.lower, str.title))
            out = {k: case(v) if isinstance(v, str) else v for k, v in out.items()}
        elif kind < 0.35:
            desc = out["description"] or ""
            words = desc.split()
            if words:
                pos = rng.randrange(len(words) + 1)
                words.insert(pos, rng.choice(_HTML_NOISE))
                out["description"] = " ".join(words)
        elif kind < 0.6:
            drop = rng.choice(("description", "brand", "seller_category"))
            if drop != "description" or out["title"]:
                out[drop] = ""
        elif kind < 0.8:
            desc = out["description"] or ""
            if len(desc) > 40:
                out["description"] = desc[: rng.randint(20, max(21, len(desc) // 2))]
        elif kind < 0.9:
            if out["title"]:
                out["title"] = web_offer(out["title"], rng)
        else:
            out = {k: benchmark_tokens(v) if isinstance(v, str) else v for k, v in out.items()}
    return out


@dataclass
class TrainResult:
    """What training produced."""

    model: Any
    tokenizer: Any
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    # Whether `train.max_minutes` stopped training before `train.epochs` (the model then
    # depends on the machine's speed: the report and MLflow say so).
    stopped_by_time_budget: bool = False
    seconds: float = 0.0
    items_per_second: float = 0.0
    device: str = "cpu"
    added_tokens: int = 0
    # `mapped_rows`' notes when the added rows started from another model's embeddings.
    vocab_mapping: dict[str, Any] = field(default_factory=dict)


def _fields(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k, "") for k in ("title", "description", "brand", "seller_category")}


def _bucketed_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    chunk = batch_size * 32
    batches: list[list[int]] = []
    for start in range(0, len(idx), chunk):
        part = sorted(idx[start : start + chunk], key=lambda i: lengths[i])
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def predict_logits(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    max_tokens: int,
    device: str = "cpu",
    batch_size: int = 64,
    model_input: ModelInput | None = None,
    pooling: str = "cls",
) -> NDArray[np.float32]:
    """Logits of a torch model on texts (each as `model_input` makes it), length-sorted batches."""
    import torch

    texts = (model_input or ModelInput()).many(texts)
    enc = tokenizer(texts, truncation=True, max_length=max_tokens)
    ids = enc["input_ids"]
    order = np.argsort([len(i) for i in ids], kind="stable")
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
            logits = classifier_logits(
                model,
                batch["input_ids"].to(device),
                batch["attention_mask"].to(device),
                pooling,
            )
            out[idx] = logits.float().cpu().numpy()
    return out


def train_transformer(
    cfg: Config,
    train_rows: list[dict[str, Any]],
    y_train: NDArray[np.int64],
    val_texts: list[str],
    y_val: NDArray[np.int64],
    labels: list[str],
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    console: Any = None,
) -> TrainResult:
    """Fine-tune the configured base model.

    Args:
        cfg: the validated config.
        train_rows: training listings (fields), augmented on the fly.
        y_train: 0/1 truth for train_rows, shape [n, labels].
        val_texts: built validation texts (not augmented).
        y_val: 0/1 truth for val_texts.
        labels: label names in output order.
        on_epoch: called with each epoch's metrics (MLflow logging).
        console: a rich Console for progress, or None for quiet.

    Returns:
        The best model (by validation macro PR-AUC) and its history.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from sklearn.metrics import average_precision_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    seed_everything(t.seed)
    use_cuda = t.device == "cuda" or (t.device == "auto" and torch.cuda.is_available())
    device = "cuda" if use_cuda else "cpu"
    bf16 = use_cuda and torch.cuda.is_bf16_supported()
    base = resolve_base_model(cfg.model.base_model)
    reads = cfg_model_input(cfg)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=len(labels),
        problem_type="multi_label_classification",
        id2label=dict(enumerate(labels)),
        label2id={lb: i for i, lb in enumerate(labels)},
        hidden_dropout_prob=cfg.model.dropout,
    ).to(device)
    pooling = cfg.model.pooling
    check_poolable(model, pooling)
    mapping: dict[str, Any] = {}
    added = extend_vocabulary(
        tokenizer,
        model,
        [build_text(**_fields(r), max_chars=cfg.model.max_chars).text for r in train_rows],
        cfg.model.extend_vocab_min_count,
        t.freeze_embeddings,
        init_from=(
            resolve_base_model(cfg.model.extend_vocab_from) if cfg.model.extend_vocab_from else None
        ),
        notes=mapping,
    )
    if added:
        log.info("added %d Chinese/Japanese characters to the vocabulary", len(added))
    extra = None
    if added and t.new_token_lr is not None:
        start = len(tokenizer) - len(added)
        if tokenizer.convert_tokens_to_ids(added) != list(range(start, len(tokenizer))):
            raise ConfigError("train.new_token_lr needs the added tokens at the end of the table")
        extra = split_embeddings(model, start)

    positives = y_train.sum(axis=0).astype(np.float64)
    negatives = len(y_train) - positives
    pos_weight = np.minimum(negatives / np.maximum(positives, 1.0), t.pos_weight_cap)
    loss_fn = torch.nn.BCEWithLogitsLoss(
        pos_weight=torch.tensor(pos_weight, dtype=torch.float32, device=device)
    )
    if t.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head = [p for n, p in trainable if "classifier" in n or "pooler" in n]
    body = [p for n, p in trainable if not ("classifier" in n or "pooler" in n) and p is not extra]
    groups: list[dict[str, Any]] = [
        {"params": body, "lr": t.lr},
        {"params": head, "lr": t.head_lr},
    ]
    if extra is not None:
        groups.append({"params": [extra], "lr": t.new_token_lr, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, weight_decay=t.weight_decay)
    steps_per_epoch = math.ceil(len(train_rows) / t.batch_size)
    total_steps = steps_per_epoch * t.epochs
    warmup = int(total_steps * t.warmup_ratio)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rng = random.Random(t.seed)
    result = TrainResult(
        model=model,
        tokenizer=tokenizer,
        device=device,
        added_tokens=len(added),
        vocab_mapping=mapping,
    )
    best_score, best_state, bad_epochs = -1.0, None, 0
    started = time.perf_counter()
    seen_items = 0
    train_seconds = 0.0
    y_tensor = torch.tensor(y_train, dtype=torch.float32)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=console is None,
        transient=False,
    )
    with progress:
        for epoch in range(1, t.epochs + 1):
            epoch_start = time.perf_counter()
            texts = [
                build_text(
                    **(augment_fields(r, rng) if rng.random() < t.augment_prob else _fields(r)),
                    max_chars=cfg.model.max_chars,
                ).text
                for r in train_rows
            ]
            texts = reads.many(texts)
            enc = tokenizer(texts, truncation=True, max_length=cfg.model.max_tokens)
            ids = enc["input_ids"]
            batches = _bucketed_batches([len(i) for i in ids], t.batch_size, rng)
            task = progress.add_task(f"epoch {epoch}/{t.epochs}", total=len(batches), loss=0.0)
            model.train()
            running = 0.0
            for step, idx in enumerate(batches, start=1):
                batch = tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
                target = y_tensor[idx].to(device)
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=bf16):
                    logits = classifier_logits(
                        model,
                        batch["input_ids"].to(device),
                        batch["attention_mask"].to(device),
                        pooling,
                    )
                loss = loss_fn(logits.float(), target)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                running += float(loss.item())
                seen_items += len(idx)
                progress.update(task, advance=1, loss=running / step)
            train_seconds += time.perf_counter() - epoch_start
            val_logits = predict_logits(
                model,
                tokenizer,
                val_texts,
                cfg.model.max_tokens,
                device,
                model_input=reads,
                pooling=pooling,
            )
            with torch.no_grad():
                val_loss = float(
                    loss_fn(
                        torch.tensor(val_logits, device=device),
                        torch.tensor(y_val, dtype=torch.float32, device=device),
                    ).item()
                )
            aps = [
                average_precision_score(y_val[:, j], val_logits[:, j])
                for j in range(len(labels))
                if y_val[:, j].sum() > 0
            ]
            score = float(np.mean(aps)) if aps else 0.0
            row = {
                "epoch": float(epoch),
                "train_loss": running / max(1, len(batches)),
                "val_loss": val_loss,
                "val_macro_pr_auc": score,
                "epoch_seconds": time.perf_counter() - epoch_start,
            }
            result.history.append(row)
            if on_epoch:
                on_epoch(row)
            if console is not None:
                console.print(
                    f"  epoch {epoch}: train loss {row['train_loss']:.4f}, val loss "
                    f"{val_loss:.4f}, val macro PR-AUC {score:.4f}"
                )
            if score > best_score + 1e-4:
                best_score, bad_epochs, result.best_epoch = score, 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad_epochs += 1
                if bad_epochs >= t.patience:
                    log.info("early stopping after epoch %d", epoch)
                    break
            elapsed = time.perf_counter() - started
            if epoch < t.epochs and (elapsed + row["epoch_seconds"]) / 60 > t.max_minutes:
                # another epoch would overrun the budget: stop with the best so far
                log.warning("time budget of %.1f min would be exceeded; stopping", t.max_minutes)
                result.stopped_by_time_budget = True
                if console is not None:
                    console.print(f"  stopping: another epoch would pass {t.max_minutes} min")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    merge_embeddings(model)
    model.to("cpu")
    result.seconds = time.perf_counter() - started
    result.items_per_second = seen_items / train_seconds if train_seconds else 0.0
    return result
