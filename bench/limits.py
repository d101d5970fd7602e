"""Hardware limits: measured GEMM rates (fp32 and int8) and MiniLM's FLOPs per item."""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np


def fp32_gemm_gflops(n: int = 1024, repeats: int = 20) -> float:
    """fp32 GEMM rate of numpy's BLAS on this machine (best of `repeats`)."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def int8_gemm_gops(m: int = 1024, k: int = 384, n: int = 1536, repeats: int = 30) -> float:
    """int8 GEMM rate of ONNX Runtime's MatMulInteger (the kernel dynamic int8 models use)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    weight = rng.integers(-127, 127, (k, n), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])],
        "mm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
        [helper.make_tensor("w", TensorProto.INT8, [k, n], weight.tobytes(), raw=True)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with tempfile.NamedTemporaryFile(suffix=".onnx", delete=False) as handle:
        onnx.save(model, handle.name)
        path = handle.name
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 255, (m, k), dtype=np.uint8)
    session.run(None, {"a": a})
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, {"a": a})
        best = min(best, time.perf_counter() - t)
    os.unlink(path)
    return 2 * m * k * n / best / 1e9


def minilm_flops(tokens: float, layers: int = 6, hidden: int = 384, ffn: int = 1536) -> float:
    """FLOPs of one MiniLM-L6 forward pass over `tokens` tokens (matrix products + attention)."""
    linear = 2 * tokens * layers * (4 * hidden * hidden + 2 * hidden * ffn)
    attention = 2 * 2 * tokens * tokens * hidden * layers
    return float(linear + attention)
