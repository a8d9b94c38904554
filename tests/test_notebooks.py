"""The notebooks run top to bottom (offline, tiny settings) and are committed without outputs.

Each notebook runs in a fresh kernel started from this interpreter (a kernelspec written to a temporary folder, so
no Jupyter kernel needs to be installed), with the working directory and `VIDGPT2_NOTEBOOK_OUTPUT` in a temporary
folder: nothing is written into the repository. A failing cell fails the test; each notebook's last cell checks its
results with asserts and prints a marker that the test looks for.
"""

from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL = "vidgpt2-tests"
# STYLE.md principle 8: notebooks import vidgpt2 plus standard libraries, never test helpers or local scripts
ALLOWED_IMPORTS = {
    "vidgpt2",
    "transformers",
    "torch",
    "IPython",
    "matplotlib",
    "pandas",
    "json",
    "os",
    "pathlib",
    "shutil",
    "subprocess",
    "sys",
}
MARKERS = {
    "01_quickstart.ipynb": "QUICKSTART OK",
    "02_finetune.ipynb": "FINETUNE OK",
    "03_publish.ipynb": "PUBLISH OK",
    "04_explainable_driving.ipynb": "DRIVING OK",
}


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    """A kernelspec that runs ipykernel in this interpreter (the venv), whatever kernels are installed."""
    root = tmp_path_factory.mktemp("kernels")
    (root / KERNEL).mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "vidgpt2 tests",
        "language": "python",
    }
    (root / KERNEL / "kernel.json").write_text(json.dumps(spec))
    return root


def run_notebook(name: str, kernel_dir: Path, workdir: Path) -> nbformat.NotebookNode:
    """Execute `notebooks/<name>` with cwd = `workdir`; raises `CellExecutionError` on the first failing cell."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    env = dict(
        os.environ,
        VIDGPT2_NOTEBOOK_OUTPUT=str(workdir / "outputs"),
        HF_HUB_OFFLINE="1",
        HF_MODULES_CACHE=str(workdir / "hf_modules"),  # remote code loaded by 03 stays out of ~/.cache
        OMP_NUM_THREADS="1",  # tiny models: a second thread only competes with other tests for the cores
        TOKENIZERS_PARALLELISM="false",
    )
    env.pop("VIDGPT2_MODEL", None)  # the notebooks would load that model instead of building a tiny one
    manager = AsyncKernelManager(
        kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)])
    )
    client = NotebookClient(notebook, km=manager, timeout=300, resources={"metadata": {"path": str(workdir)}})
    client.execute(env=env)
    return notebook


def outputs_of(notebook: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def stdout_of(notebook: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in outputs_of(notebook) if o.get("name") == "stdout")


def images_of(notebook: nbformat.NotebookNode) -> list[str]:
    return [o["data"]["image/png"] for o in outputs_of(notebook) if "image/png" in o.get("data", {})]


@pytest.mark.parametrize("name", sorted(MARKERS))
def test_committed_notebook_has_no_outputs_and_imports_only_vidgpt2_and_libraries(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, f"{name} has no code cells"
    for index, cell in enumerate(code):
        assert cell.outputs == [] and cell.execution_count is None, f"{name}: code cell {index} has outputs"
    imported = set()
    for cell in code:
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add((node.module or "").split(".")[0])
    assert "vidgpt2" in imported
    assert imported <= ALLOWED_IMPORTS, (
        f"{name} imports {sorted(imported - ALLOWED_IMPORTS)}: move that code into vidgpt2"
    )


def test_quickstart_captions_and_explains(kernel_dir, tmp_path):
    notebook = run_notebook("01_quickstart.ipynb", kernel_dir, tmp_path)
    stdout = stdout_of(notebook)
    assert MARKERS["01_quickstart.ipynb"] in stdout
    assert "pixel_values_videos: (1, 4, 3, 64, 64)" in stdout
    assert len(images_of(notebook)) == 1, "the explanation figure must be shown inline"
    saved = tmp_path / "outputs" / "01_quickstart" / "explanation"
    assert {p.name for p in saved.iterdir()} == {"explanation.png", "explanation.json", "explanation.html"}
    assert json.loads((saved / "explanation.json").read_text())["num_frames"] == 4


def test_finetune_trains_lora_and_compares(kernel_dir, tmp_path):
    notebook = run_notebook("02_finetune.ipynb", kernel_dir, tmp_path)
    assert MARKERS["02_finetune.ipynb"] in stdout_of(notebook)
    assert len(images_of(notebook)) == 2, "both loss curves must be shown"
    out = tmp_path / "outputs" / "02_finetune"
    history = json.loads((out / "scratch" / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < 0.6 * losses[0], losses
    assert (out / "lora" / "adapter_model.safetensors").is_file()
    assert (out / "lora" / "merged" / "model.safetensors").is_file()
    tables = [o["data"].get("text/plain", "") for o in outputs_of(notebook) if "data" in o]
    assert any("cider" in t and "+ LoRA" in t for t in tables), "the metrics comparison table is missing"
    assert any("family right" in t for t in tables), "the per-family table is missing"


def test_publish_pushes_and_reloads_identically(kernel_dir, tmp_path):
    notebook = run_notebook("03_publish.ipynb", kernel_dir, tmp_path)
    stdout = stdout_of(notebook)
    assert MARKERS["03_publish.ipynb"] in stdout
    assert "model class from: transformers_modules." in stdout, "the no-vidgpt2 reload must use the repo's code"
    repo = tmp_path / "outputs" / "03_publish" / "hub" / "your-name" / "vidgpt2-tiny"
    for file in ("README.md", "model.safetensors", "config.json", "processor_config.json", "modeling_vidgpt2.py"):
        assert (repo / file).is_file(), file


def test_explainable_driving_trains_and_grounds(kernel_dir, tmp_path):
    notebook = run_notebook("04_explainable_driving.ipynb", kernel_dir, tmp_path)
    assert MARKERS["04_explainable_driving.ipynb"] in stdout_of(notebook)
    assert len(images_of(notebook)) == 1, "the grounding figure must be shown inline"
    out = tmp_path / "outputs" / "04_explainable_driving"
    assert (out / "data" / "ground_truth.jsonl").is_file() and (out / "model" / "model.safetensors").is_file()
    tables = [o["data"].get("text/plain", "") for o in outputs_of(notebook) if "data" in o]
    assert any("grad-cam_temporal" in t and "chance" in t for t in tables), "the grounding table is missing"
