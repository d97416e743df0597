"""A tiny WD14-format tagger (model.onnx + selected_tags.csv) built in code, for tests and benchmarks where
the real tagger cannot be downloaded. Its scores are constants plus a linear map of the per-channel means
of its (NHWC, BGR, 0-255) input, so what it sees is checkable."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_tiny_tagger(
    folder: str | Path,
    tags: list[tuple[str, float, int]],
    colour_weights: np.ndarray | None = None,
    input_shape: tuple = ("batch", 32, 32, 3),
) -> Path:
    """Write `folder/model.onnx` and `folder/selected_tags.csv` for `tags` [(name, score, category)].

    colour_weights: (3, len(tags)) map from the input's channel means to score offsets (default zeros).
    """
    import onnx  # a dev dependency: only the builder needs it, the tagger runs on onnxruntime
    from onnx import TensorProto, helper

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = np.zeros((3, len(tags)), np.float32) if colour_weights is None else colour_weights
    axes = [1, 2] if input_shape[-1] == 3 else [2, 3]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input_1:0"], ["means"], axes=axes, keepdims=0),
            helper.make_node("MatMul", ["means", "weights"], ["mixed"]),
            helper.make_node("Add", ["mixed", "constants"], ["predictions_sigmoid"]),
        ],
        "tiny_tagger",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, list(input_shape))],
        [
            helper.make_tensor_value_info(
                "predictions_sigmoid", TensorProto.FLOAT, [input_shape[0], len(tags)]
            )
        ],
        initializer=[
            onnx.numpy_helper.from_array(weights.astype(np.float32), "weights"),
            onnx.numpy_helper.from_array(np.array([s for _, s, _ in tags], dtype=np.float32), "constants"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    lines = ["tag_id,name,category,count"] + [f"{i},{n},{c},{100 - i}" for i, (n, _, c) in enumerate(tags)]
    (folder / "selected_tags.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
