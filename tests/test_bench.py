"""stpred-bench pieces that run without a GPU: model rows in every precision mode, the GPU check's refusal without
CUDA, and the device section it writes into a markdown file."""

from __future__ import annotations

import pytest
from _helpers import run_module

from stpred.apps._gpu_check import write_device_section
from stpred.apps.bench import MODEL_COLUMNS, model_rows
from stpred.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_model_rows_in_fp32_and_bf16_mixed():
    rows = model_rows(["quickstart"], batch=1, steps=1, device="cpu", modes=("fp32", "bf16-mixed"))
    assert [r["mode"] for r in rows] == ["fp32", "bf16-mixed"]
    for row in rows:
        assert set(row) == set(MODEL_COLUMNS)
        assert row["model"] == "fno2d" and row["params"] == 414_357 and row["shape"] == "[10, 1, 32, 32]->10"
        assert row["train_samples_per_s"] > 0 and row["infer_sequences_per_s"] > 0
        assert row["peak_mem_mb"] is None  # measured on CUDA only


def test_unknown_mode_is_refused():
    with pytest.raises(UserError, match="unknown mode.*fp64.*choose from fp32, bf16-mixed, compiled"):
        model_rows(["quickstart"], batch=1, steps=1, device="cpu", modes=("fp64",))


def test_gpu_check_without_cuda_is_one_line_and_exit_2(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n")
    proc = run_module("stpred.apps.bench", "gpu", "--doc", doc, cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "stpred-bench: error: stpred-bench gpu needs a CUDA device and none is visible; run it on a GPU machine"
    ]
    assert doc.read_text() == "# Benchmarks\n"


def test_device_section_is_added_then_replaced_and_others_kept(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## CPU\n\ncpu table\n")
    write_device_section(doc, "NVIDIA H100", "first run")
    write_device_section(doc, "NVIDIA A100", "a100 run")
    write_device_section(doc, "NVIDIA H100", "second run")
    text = doc.read_text()
    assert text.count("## GPU: NVIDIA H100") == 1 and "second run" in text and "first run" not in text
    assert "## CPU\n\ncpu table" in text and "## GPU: NVIDIA A100\n\na100 run" in text
    assert text.index("## CPU") < text.index("## GPU: NVIDIA H100") < text.index("## GPU: NVIDIA A100")
