"""dualscreen training: corpus tools, fine-tuning, calibration, thresholds, evaluation, registry.

Training needs the `training` extra (`pip install 'dualscreen[training]'`); a serving-only install
lacks it, and importing this package then fails at once with a message that says so, instead of
deep inside a command. The check looks the modules up without importing them (torch alone takes
seconds), so `dualscreen score` pays nothing for it.
"""

from importlib.util import find_spec

_NEEDS = ("torch", "transformers", "datasets", "mlflow", "onnx", "safetensors", "matplotlib")
_missing = [name for name in _NEEDS if find_spec(name) is None]
if _missing:
    raise ModuleNotFoundError(
        f"dualscreen's training needs {', '.join(_missing)}: pip install 'dualscreen[training]'",
        name=_missing[0],
    )
