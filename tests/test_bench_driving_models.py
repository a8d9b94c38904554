"""`benchmarks/bench_driving.py --save-models / --load-models`: a saved model is only reused for the run it was
trained for (variant, training seed, sizes and the data set chosen by --seed)."""

import json
import logging
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_driving  # noqa: E402

SIZES = {"num_train": 32, "num_test": 12, "epochs": 1, "steps": 2}
OVERRIDES = {"visual_tokens": "pooled"}


@pytest.fixture
def saved(tmp_path):
    model_dir = tmp_path / "trained"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    folder = tmp_path / "models" / "pooled_seed0"
    bench_driving._save_training(folder, model_dir, OVERRIDES, 0, SIZES, 0, 1.5, {"train_loss": 1.0})
    return folder


def test_saved_model_loads_for_the_same_run(saved):
    record = bench_driving._load_training(saved, OVERRIDES, 0, SIZES, 0)
    assert record["metrics"] == {"train_loss": 1.0} and (saved / "model" / "config.json").is_file()


@pytest.mark.parametrize(
    ("overrides", "seed", "sizes", "data_seed", "named"),
    [
        ({"visual_tokens": "grid"}, 0, SIZES, 0, "config_overrides"),
        (OVERRIDES, 1, SIZES, 0, "seed"),
        (OVERRIDES, 0, {**SIZES, "num_train": 64}, 0, "sizes"),
        (OVERRIDES, 0, SIZES, 1, "data_seed"),  # other --seed: other clips; was accepted silently
    ],
)
def test_saved_model_is_refused_for_another_run(saved, overrides, seed, sizes, data_seed, named):
    with pytest.raises(SystemExit, match=named):
        bench_driving._load_training(saved, overrides, seed, sizes, data_seed)


def _global_state() -> tuple:
    """What bench_driving.main() sets up for a run: torch threads and the metrics logger's level."""
    return torch.get_num_threads(), logging.getLogger("vidgpt2.metrics.coco").level, logging.getLogger().handlers[:]


@pytest.mark.parametrize(
    "arguments, named",
    [(["--save-models", "a", "--load-models", "b"], "exclude each other"),
     (["--holdout-test", "-4"], "--holdout-test must be a number of clips >= 0")],
)
def test_refused_command_line_writes_nothing_and_sets_nothing_up(monkeypatch, tmp_path, arguments, named):
    # a refusal that came after the setup left the metrics logger at ERROR for the rest of the test process
    # (another test's "METEOR not computed" warning went missing) and wrote the quick data set first
    monkeypatch.setattr(bench_driving, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(sys, "argv", ["bench_driving.py", "--quick", "--threads", "3", *arguments])
    before = _global_state()
    with pytest.raises(SystemExit, match=named):
        bench_driving.main()
    assert _global_state() == before
    assert not (tmp_path / "cache").exists()


def test_grounding_table_has_a_row_per_grounded_run_and_the_relevancy_columns():
    entry = {"hit_rate": 0.75, "ci95": (0.5, 0.9), "chance": 0.25, "n": 4}
    grounding = {"num_clips": 4, "attention_temporal": entry, "relevancy_temporal": entry, "relevancy_spatial": entry}
    variants = {"spatial": {"runs": {"0": {"seed": 0, "holdout": {"grounding": grounding}}, "1": {"seed": 1}}}}
    table = bench_driving.grounding_table(variants, lambda run: (run.get("holdout") or {}).get("grounding"))
    header, _, *rows = table.splitlines()
    assert "relevancy: temporal" in header and "relevancy: spatial" in header and len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[:5] == ["spatial", "0", "4", "0.75 (0.50-0.90) vs 0.25", "0.75 (0.50-0.90) vs 0.25"]
    assert cells[5] == "-" and cells[8] == "-"  # no Grad-CAM entry, no fixed-frame baseline


def test_resummarize_recomputes_the_summaries_from_the_per_clip_records(tmp_path, monkeypatch, capsys):
    late = [0.0] * 7 + [1.0]
    records = [{"attention_temporal": 1.0, "attention_frame_scores": late, "cause_frames": cause,
                "temporal_chance": len(cause) / 8} for cause in ([7], [6, 7])]
    run = {"seed": 0, "direction": {"n": 0}, "exact_match": {"action": 1.0, "justification": 1.0, "caption": 1.0},
           "action_by_kind": {"red_light": 1.0}, "test_metrics": {}, "train_runtime_s": 1.0,
           "grounding": {"num_clips": 2, "stale": True}, "grounding_records": records}
    results = {"sizes": {"num_train": 32, "num_test": 12, "epochs": 1, "steps": 2},
               "variants": {"spatial 3x3 (9 tokens/frame)": {"runs": {"0": run}}}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    monkeypatch.setattr(sys, "argv", ["bench_driving.py", "--resummarize", str(path)])
    assert bench_driving.main() == 0
    summary = json.loads(path.read_text())["variants"]["spatial 3x3 (9 tokens/frame)"]["runs"]["0"]["grounding"]
    assert "stale" not in summary and summary["attention_temporal"]["position_chance"] == 1.0
    assert summary["attention_temporal"]["position_p"] == 1.0 and summary["fixed_frame"]["frame"] == 7
    assert "1.00 (0.34-1.00) vs 0.19; pos. 1.00, p 1.000" in capsys.readouterr().out
    # the pointing-game figure is written next to the results (no held-out clips: only the test split's)
    assert (tmp_path / "results_pointing_test.png").stat().st_size > 0
    assert not (tmp_path / "results_pointing_holdout.png").exists()


def test_kind_table_shows_each_method_per_cause_kind_and_the_deletion_row():
    by_kind = {"pedestrian": {"hit_rate": 0.25, "chance": 0.38, "n": 4}, "red_light": {"hit_rate": 1.0, "chance": 0.41, "n": 4}}
    grounding = {"num_clips": 8, "attention_temporal": {"by_kind": by_kind},
                 "deletion": {"cause_beats_other_by_kind": {"pedestrian": 0.0, "red_light": 0.75}}}
    variants = {"pooled": {"runs": {"0": {"seed": 0, "grounding": grounding}}}}
    header, _, *rows = bench_driving.kind_table(variants, lambda run: run.get("grounding")).splitlines()
    assert "pedestrian (chance 0.38)" in header and "red_light (chance 0.41)" in header
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert cells == [["pooled", "attention", "0.25", "1.00"], ["pooled", "deletion: cause > other", "0.00", "0.75"]]
    assert bench_driving.kind_table({"pooled": {"runs": {"0": {"seed": 0}}}}, lambda run: run.get("grounding")) is None


def test_video_dependent_table_scores_only_the_clips_whose_cause_words_need_the_video():
    entry = {"hit_rate": 1.0, "ci95": (0.34, 1.0), "chance": 0.25, "n": 2}
    subset = {"num_clips": 2, "attention_temporal": entry, "fixed_frame": {"frame": 3, "hit_rate": 0.5, "n": 2}}
    grounding = {"num_clips": 4, "attention_temporal": {"hit_rate": 0.5}, "video_dependent": subset,
                 "video_dependence": {"nats": 1.01, "share_needing_video": 0.5, "n": 4}}
    variants = {"pooled": {"runs": {"0": {"seed": 0, "grounding": grounding}}}, "grid": {"runs": {"0": {"seed": 0}}}}
    header, _, *rows = bench_driving.video_dependent_table(variants, lambda run: run.get("grounding")).splitlines()
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert len(rows) == 1 and cells[:4] == ["pooled", "2 / 4", "1.01", "1.00 (0.34-1.00) vs 0.25"]
    assert cells[4:9] == ["-"] * 5 and cells[9] == "0.50 (frame 3)"  # no other method scored; the subset's fixed frame


def test_pointing_chart_of_the_clips_needing_the_video_is_drawn_only_when_there_are_some(tmp_path):
    entry = {"hit_rate": 0.9, "ci95": (0.7, 0.97), "chance": 0.44, "n": 20, "position_chance": 0.4}
    holdout = {"grounding": {"num_clips": 40, "attention_temporal": dict(entry, n=40),
                             "video_dependent": {"num_clips": 20, "attention_temporal": entry}}}
    results = {"variants": {"grid": {"runs": {"0": {"seed": 0, "holdout": holdout}}}}}
    path = bench_driving.save_grounding_chart(results, tmp_path / "vd.png", holdout=True, subset="video_dependent")
    assert path is not None and path.stat().st_size > 1000
    del holdout["grounding"]["video_dependent"]
    assert bench_driving.save_grounding_chart(results, tmp_path / "none.png", holdout=True, subset="video_dependent") is None
    assert not (tmp_path / "none.png").exists()
