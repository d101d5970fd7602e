import pytest

from serving.contract.errors import ConfigError
from training.config import apply_override, load_config


def test_profiles_load(root):
    default = load_config(root / "training/configs/default.toml")
    smoke = load_config(root / "training/configs/smoke.toml")
    assert default.profile == "default" and default.model.kind == "transformer"
    assert smoke.data.max_train_rows and smoke.train.epochs <= default.train.epochs
    assert default.decide.target_recall == 0.97 and default.decide.flag_precision == 0.90


def test_overrides_parse_types(root):
    cfg = load_config(
        root / "training/configs/default.toml",
        [
            "train.epochs=2",
            "model.kind=tfidf",
            "train.lr=1e-4",
            "data.extra=['a.jsonl', 'b.csv']",
            "track.mlflow=false",
        ],
    )
    assert cfg.train.epochs == 2 and cfg.model.kind == "tfidf" and cfg.train.lr == 1e-4
    assert cfg.data.extra == ["a.jsonl", "b.csv"] and cfg.track.mlflow is False


def test_data_extra_accepts_a_single_path(root):
    cfg = load_config(None, ["data.extra=['reviewed.jsonl']"])
    assert cfg.data.extra == ["reviewed.jsonl"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=0", "train.epochs"),
        ("model.kind=svm", "model.kind"),
        ("train.colour=red", "train.colour"),
        ("nonsense", "section.key=value"),
        ("decide.target_recall=1.5", "decide.target_recall"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_override_into_scalar_is_refused():
    data = {"train": 3}
    with pytest.raises(ConfigError, match="not a section"):
        apply_override(data, "train.epochs=2")


def test_bad_toml_file(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text("[train\nepochs=")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)


def test_bare_none_unsets_an_optional_setting(root):
    # The default profile extends the vocabulary; MiniLM alone needs all three settings off.
    default = root / "training/configs/default.toml"
    with pytest.raises(ConfigError, match="new_token_lr needs"):
        load_config(default, ["model.extend_vocab_min_count=0"])
    cfg = load_config(
        default,
        [
            "model.extend_vocab_min_count=0",
            "train.new_token_lr=none",
            "model.extend_vocab_from=None",
        ],
    )
    assert cfg.train.new_token_lr is None and cfg.model.extend_vocab_from is None
    assert load_config(default, ["model.base_model='none'"]).model.base_model == "none"
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(default, ["train.epochs=none"])
