"""``tipsv2 pretrain``: train (default command), params, ablate --smoke; user errors exit 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import tipsv2_sdk
from tipsv2_sdk.cli.app import cli

TINY = str(Path(__file__).resolve().parents[2] / "pretrain" / "configs" / "tiny_test.yaml")


def invoke(*args: str):
    return CliRunner().invoke(cli, ["pretrain", *args], catch_exceptions=False)


def test_train_is_the_default_command_and_resumes(tmp_path):
    result = invoke("--config", TINY, f"output_dir={tmp_path}", "schedule.steps=2", "data.batch_size=8",
                    "checkpoint.every_steps=1")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 2 and Path(summary["export_dir"]).is_dir()
    assert tipsv2_sdk.load(summary["export_dir"]).meta["trained"] is True
    # A longer schedule continues from the step-2 checkpoint instead of starting over.
    again = invoke("train", "--config", TINY, f"output_dir={tmp_path}", "schedule.steps=3", "data.batch_size=8",
                   "--resume")
    assert again.exit_code == 0, again.output
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


def test_print_config_applies_overrides():
    result = invoke("--config", TINY, "optim.lr=0.5", "--print-config")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["optim"]["lr"] == 0.5


def test_user_errors_exit_2_with_one_line(tmp_path):
    for args, needle in [
        (("--config", TINY, "optim.lrr=1"), "optim.lrr"),
        (("--config", TINY, "data.batch_size=many"), "data.batch_size"),
        (("--config", str(tmp_path / "none.yaml")), "not found"),
        (("--config", TINY, f"output_dir={tmp_path}", "--resume-from", str(tmp_path)), "not a checkpoint"),
        (("--config", TINY, "data.global_crop_size=50"), "multiple of the patch size"),
        (("--config", TINY, "distill.enabled=true"), "distill.teacher"),
        (("params", "--variant", "nope"), "nope"),
        (("params", "--paper-prototypes", "0"), "--paper-prototypes"),
    ]:
        result = CliRunner().invoke(cli, ["pretrain", *args])
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output and "Traceback" not in result.output


def test_params_counts_head_only_vs_full_ema():
    from tipsv2_sdk.pretrain.params import paper_parameter_counts, training_parameter_counts

    result = invoke("params", "--variant", "tipsv2-b14", "--json")
    assert result.exit_code == 0
    counts = json.loads(result.stdout)
    paper = counts.pop("paper")
    assert counts.pop("paper_reduction") == paper["reduction"]
    assert counts == json.loads(json.dumps(training_parameter_counts("tipsv2-b14")))  # today's keys unchanged
    assert counts["full_ema"] > counts["head_ema"] > 0 and 0 < counts["reduction"] < 1
    assert paper == json.loads(json.dumps(paper_parameter_counts("tipsv2-b14")))
    assert round(100 * paper["reduction"], 1) == 41.9 and paper["prototypes"] == 8192
    shared = json.loads(invoke("params", "--json", "--paper-prototypes", "32768", "--paper-shared-head").stdout)
    assert round(100 * shared["paper_reduction"], 1) == 42.7 and shared["paper"]["shared_head"] is True
    assert shared["reduction"] == counts["reduction"]  # the paper flags leave today's count alone
    text_counted = json.loads(invoke("params", "--json", "--paper-count-text").stdout)
    assert "student_text_encoder" in text_counted["paper"]["terms"]["head_ema"]
    assert text_counted["paper_reduction"] < paper["reduction"]
    text = invoke("params", "--variant", "tipsv2-s14")
    assert "fewer" in text.output and "counted:" in text.output and "paper accounting" in text.output
    assert "teacher_image_encoder" in text.output


def test_ablate_smoke_writes_results_table_and_plot(tmp_path):
    docs = tmp_path / "docs" / "ablation.md"
    result = invoke("ablate", "--smoke", "--out", str(tmp_path / "runs"), "--docs", str(docs))
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "runs" / "results.json").read_text())
    assert [r["key"] for r in results["rungs"]] == ["tips", "ibot_pp", "captions", "tipsv2", "distill"]
    by_key = {r["key"]: r["mean"] for r in results["rungs"]}
    # head-only EMA holds no encoder copy; the distilled student trains fewer parameters
    assert by_key["tipsv2"]["held_params"] < by_key["captions"]["held_params"]
    assert by_key["distill"]["trainable_params"] < by_key["tipsv2"]["trainable_params"]
    for row in results["rungs"]:
        assert 0.0 <= row["mean"]["seg_miou"] <= 1.0 and row["mean"]["steps"] == 3
    text = docs.read_text()
    assert "+ iBOT++" in text and "17.6" in text and "(agrees)" in text or "(disagrees)" in text
    assert docs.with_suffix(".png").stat().st_size > 1000


def test_python_dash_m_runs_the_same_group():
    proc = subprocess.run([sys.executable, "-m", "tipsv2_sdk.pretrain", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "ablate" in proc.stdout and "params" in proc.stdout


def _fake_results() -> dict:
    mean = {"seg_miou": 0.1, "seg_pixel_acc": 0.5, "seg_miou_color": 0.2, "seg_pixel_acc_color": 0.6, "t2i_r1_long_cls2": 0.2, "i2t_r1_long_cls2": 0.3,
            "t2i_r1_alt_cls1": 0.04, "knn_acc_cls1": 0.15, "trainable_params": 10, "held_params": 20,
            "peak_rss_mb": 100, "steps_per_s": 1.0, "chance_r1": 0.005, "chance_knn": 0.175}
    from tipsv2_sdk.pretrain.ablate import LADDER

    return {"budget": {"steps": 7, "max_minutes": None}, "seeds": 1, "base_config": "tiny_test.yaml",
            "rungs": [{"key": r.key, "label": r.label, "mean": dict(mean)} for r in LADDER]}


def test_ablation_report_keeps_hand_written_text_outside_its_markers(tmp_path):
    from tipsv2_sdk.pretrain.ablate import REPORT_BEGIN, REPORT_END, write_report

    docs = tmp_path / "ablation.md"
    write_report(_fake_results(), docs)  # a new file: just the generated block
    first = docs.read_text()
    assert first.startswith(REPORT_BEGIN) and REPORT_END in first and "Budget per rung: 7 steps" in first
    docs.write_text("# My notes\n\n" + first + "\n## Analysis written by hand\n\nkeep me\n")
    results = _fake_results()
    results["budget"]["steps"] = 9
    write_report(results, docs)
    text = docs.read_text()
    assert text.startswith("# My notes\n\n" + REPORT_BEGIN) and text.endswith("## Analysis written by hand\n\nkeep me\n")
    assert "Budget per rung: 9 steps" in text and "7 steps" not in text and text.count(REPORT_BEGIN) == 1


def test_agreement_compares_both_targets_with_the_paper_and_the_seed_spread():
    from tipsv2_sdk.pretrain.ablate import agreement

    results = _fake_results()
    by_key = {r["key"]: r["mean"] for r in results["rungs"]}
    for key, shape, colour in (("tips", 0.10, 0.14), ("ibot_pp", 0.09, 0.19), ("captions", 0.12, 0.20),
                               ("tipsv2", 0.12, 0.20)):
        by_key[key].update(seg_miou=shape, seg_miou_color=colour, seg_miou_std=0.02, seg_miou_color_std=0.01)
    lines = agreement(results)
    assert len(lines) == 3
    assert lines[0].startswith("- tips → ibot_pp: zero-shot mIoU shape -1.0 (disagrees, within the seed spread of 2.0)")
    assert "colour +5.0 (agrees, beyond the seed spread of 1.0)" in lines[0] and lines[0].endswith("+14.1 in the paper.")
    for mean in by_key.values():  # one seed: no spread to compare with
        del mean["seg_miou_std"], mean["seg_miou_color_std"]
    assert "seed spread" not in agreement(results)[0]


def test_ablate_jobs_trains_seeds_in_parallel_processes(tmp_path):
    from tipsv2_sdk.pretrain.ablate import run_ladder
    from tipsv2_sdk.pretrain.config import ConfigError

    with pytest.raises(ConfigError, match="isolate"):
        run_ladder(tmp_path / "x", smoke=True, jobs=2, isolate=False)
    with pytest.raises(ConfigError, match="jobs"):
        run_ladder(tmp_path / "x", smoke=True, jobs=0)
    docs = tmp_path / "ablation.md"
    result = invoke("ablate", "--smoke", "--seeds", "2", "--jobs", "2", "--out", str(tmp_path / "runs"),
                    "--docs", str(docs), "--config", str(Path(__file__).parents[2] / "pretrain/configs/tiny_test.yaml"))
    assert result.exit_code == 0, result.output
    rungs = json.loads((tmp_path / "runs" / "results.json").read_text())["rungs"]
    assert [r["key"] for r in rungs] == ["tips", "ibot_pp", "captions", "tipsv2", "distill"]
    for rung in rungs:
        assert [row["seed"] for row in rung["runs"]] == [0, 1]
        assert "seg_miou_color_std" in rung["mean"]
    assert "zero-shot seg mIoU (colour)" in docs.read_text()


def test_ablate_refuses_an_unmarked_docs_file_before_training(tmp_path):
    docs = tmp_path / "notes.md"
    docs.write_text("# hand-written, no markers\n")
    result = CliRunner().invoke(cli, ["pretrain", "ablate", "--smoke", "--out", str(tmp_path / "runs"),
                                      "--docs", str(docs)])
    assert result.exit_code == 2 and "notes.md" in result.output and "markers" in result.output
    assert docs.read_text() == "# hand-written, no markers\n" and not (tmp_path / "runs").exists()


def test_the_committed_ablation_page_is_a_valid_report_target():
    from tipsv2_sdk.pretrain.ablate import check_report_target

    page = Path(__file__).resolve().parents[2] / "docs" / "ablation.md"
    check_report_target(page)  # raises when the markers were edited away
    assert "## Why the dense gains cannot appear at this budget" in page.read_text()
