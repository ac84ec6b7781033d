"""The model card (services/registry/model_card.py) from typed inputs: with and without
label issues, a failed gate rule, a parent version, hostile names escaped; and the card's
inputs read from a version folder's documents (services/registry/card_inputs.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from services.api.version_page import card_html
from services.registry.card_inputs import card_of, changed_hyperparameters
from services.registry.card_types import Ancestor, Lineage, Promotion, StartingWeights
from services.registry.model_card import md, render_model_card
from training.hyperparams import Hyperparameters

PARENT = "s3://bucket/colecionador/models/digits-backbone/v1/model.pt"


def lineage(start: StartingWeights | None = None, **hp) -> Lineage:
    values = Hyperparameters(**{"backbone": "resnet18", "image_size": 32, **hp}).effective()
    changed, defaults = changed_hyperparameters(values)
    return Lineage(
        model_name="digits",
        version=2,
        job_id=7,
        batch_id="lote-1",
        dataset_uri="s3://datasets/lote-1/",
        dataset_fingerprint="f" * 40,
        starting_weights=start or StartingWeights(kind="none"),
        hyperparameters=values,
        changed_hyperparameters=changed,
        defaults=defaults,
    )


def version(status: str = "approved", rules: list[dict] | None = None) -> SimpleNamespace:
    rules = rules or [
        {"metric": "accuracy", "threshold": 0.9, "value": 0.95, "passed": True},
        {"metric": "recall", "threshold": 0.88, "value": 0.93, "passed": True},
    ]
    return SimpleNamespace(
        model_name="digits",
        version=2,
        status=status,
        trained_at=datetime(2026, 12, 2, 1, 30, tzinfo=UTC),
        accuracy=0.95,
        precision=0.94,
        recall=0.93,
        f1=0.935,
        roc_auc=0.99,
        gate={"status": status, "rules": rules},
    )


def documents(label_issues: dict | None = None) -> dict:
    docs = {
        "metrics.json": {
            "test": {
                "accuracy": 0.95,
                "n": 20,
                "classes": ["five", "six"],
                "per_class": {
                    "five": {"precision": 1.0, "recall": 0.9, "f1": 0.947, "support": 10},
                    "six": {"precision": 0.909, "recall": 1.0, "f1": 0.952, "support": 10},
                },
                "confusion_matrix": [[9, 1], [0, 10]],
            },
            "split": {"train": 160, "val": 20, "test": 20},
            "skipped_images": [{"path": "six/bad.png", "reason": "truncated"}],
            "calibration": {
                "temperature": 1.33,
                "n_bins": 15,
                "validation_images": 20,
                "ece_before": 0.0258,
                "ece_after": 0.0236,
                "ece_before_interval": [0.02, 0.09],
                "ece_after_interval": [0.018, 0.085],
                "nll_before": 0.0804,
                "nll_after": 0.0809,
            },
        },
        "health.json": {
            "images": 200,
            "per_class": {"five": 100, "six": 100},
            "findings": [
                {
                    "kind": "near_duplicates",
                    "message": "2 near-duplicate pair(s) (pixels)",
                    "count": 2,
                },
                {"kind": "imbalance", "message": "imbalance ratio 11.0 exceeds 10", "count": 1},
            ],
            "drift": {
                "production_version": 1,
                "total_variation": 0.25,
                "chi_square": {"p_value": 1e-5},
                "new_classes": ["six"],
                "missing_classes": [],
                "leakage_count": 3,
            },
        },
    }
    if label_issues is not None:
        docs["label_issues.json"] = label_issues
    return docs


def card(mv=None, lin=None, docs=None, promotions=(), as_of="when v2 was committed"):
    return render_model_card(
        card_of(
            mv or version(),
            lin or lineage(),
            documents() if docs is None else docs,
            list(promotions),
            as_of=as_of,
        )
    )


def test_a_card_says_what_how_how_good_and_what_to_watch():
    text = card()
    assert text.startswith("# Model card: digits v2\n")
    assert "**approved** by the quality gate · trained 2026-12-02 01:30 UTC · job 7" in text
    # what it classifies: classes, counts, split
    assert "2 classes, 200 images: 160 train / 20 val / 20 test (stratified split, seed 0)" in text
    assert "| five | 100 | 10 | 1.0000 | 0.9000 | 0.9470 |" in text
    assert "1 unreadable image(s) skipped" in text
    # how it was trained: only the values that differ from the defaults, with the default
    assert "| image_size | 32 | 224 |" in text and '| backbone | "resnet18" |' in text
    assert "| phase1_lr |" not in text
    assert "- Starting weights: none: trained from randomly initialised weights" in text
    assert "fingerprint " + "f" * 40 in text
    # how good: test metrics, calibration with its intervals, confusion, the gate
    assert "accuracy 0.9500, precision 0.9400, recall 0.9300, f1 0.9350 (macro)" in text
    assert "0.0258 (90 % interval 0.0200-0.0900) before, 0.0236 (90 % interval" in text
    assert "T = 1.33" in text and "| five | 9 | 1 |" in text
    assert "| accuracy | 0.9500 | > 0.90 | pass |" in text and "Rejected by" not in text
    # what to watch
    assert "- Label issues: not checked (label_check=false)" in text
    assert "- Near duplicates: 2 near-duplicate pair(s) (pixels)" in text
    assert "- Label conflicts (the same picture under two classes): none found" in text
    assert "Drift against production (v1): class mix total variation 0.250" in text
    assert "new classes six; 3 image(s) matching its test split" in text
    assert "- imbalance: imbalance ratio 11.0 exceeds 10" in text
    assert "No alias points here by a recorded move." in text


def test_label_issues_are_listed_top_first():
    issues = {
        "issues_found": 12,
        "images_checked": 180,
        "source": "a linear head on frozen features",
        "issues": [
            {
                "rank": r,
                "path": f"five/{r}.png",
                "given_label": "five",
                "likely_label": "six",
                "confidence": 0.9,
            }
            for r in range(1, 13)
        ],  # fmt: skip
    }
    text = card(docs=documents(issues))
    assert "12 likely mislabelled among 180 train + val images (a linear head" in text
    assert "| 1 | five/1.png | five | six | 0.900 |" in text
    assert "| 10 | five/10.png |" in text and "| 11 |" not in text
    assert "... and 2 more not shown here" in text
    failed = card(docs=documents({"error": "no features", "issues": []}))
    assert "- Label issues: the check failed: no features" in failed


def test_a_failed_gate_rule_is_named():
    rules = [
        {"metric": "accuracy", "threshold": 0.9, "value": 0.5, "passed": False},
        {"metric": "ece", "threshold": 0.05, "value": 0.02, "passed": True, "op": "<"},
    ]
    text = card(mv=version("rejected", rules))
    assert "**rejected** by the quality gate" in text and "### Quality gate: rejected" in text
    assert "| accuracy | 0.5000 | > 0.90 | **FAIL** |" in text
    assert "| ece | 0.0200 | < 0.05 | pass |" in text
    assert "- Rejected by accuracy: 0.5000 is not > 0.90." in text
    assert "Rejected by ece" not in text


def test_a_parent_version_and_its_promotions():
    weights = StartingWeights(
        kind="model_version", weights=PARENT, model_name="digits-backbone", version=1
    )
    moved = Promotion(
        alias="production",
        from_version=1,
        by="ana",
        reason="the gate's floor is wrong for this batch",
        overrode_gate=True,
        at=datetime(2026, 12, 2, 2, 0),
    )
    lin = lineage(weights, weights=PARENT)
    lin.ancestors = [
        Ancestor(
            model_name="digits-backbone",
            version=1,
            job_id=3,
            dataset_uri="s3://datasets/digits-0-4/",
            dataset_fingerprint="e" * 40,
            starting_weights=StartingWeights(kind="none"),
        )
    ]
    text = card(lin=lin, promotions=[moved], as_of="live")
    assert f"- Starting weights: model digits-backbone v1 ({PARENT})" in text
    assert (
        "  - digits-backbone v1 (job 3) was trained on s3://datasets/digits-0-4/ (fingerprint "
        + "e" * 40
        + ") from none: trained from randomly initialised weights"
    ) in text
    assert f'| weights | "{PARENT}" | null |' in text
    assert "Recorded live." in text
    assert "| 2026-12-02 02:00:00 | production | v1 | ana | the gate's floor" in text
    assert text.rstrip().endswith("| yes |")
    pretrained = card(lin=lineage(StartingWeights(kind="pretrained", weights="IMAGENET1K_V1")))
    assert "torchvision's pretrained weights IMAGENET1K_V1" in pretrained


def test_hostile_names_stay_text_in_the_card_and_on_the_page():
    docs = documents()
    docs["health.json"]["per_class"] = {"<script>x</script>": 1, "[a](javascript:1)": 1}
    docs["metrics.json"]["test"]["classes"] = ["<script>x</script>", "[a](javascript:1)"]
    text = card(docs=docs)
    assert "\\<script\\>x\\</script\\>" in text and "\\[a\\](javascript:1)" in text
    page = card_html(text)
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "href" not in page and "<table>" in page
    assert md("a|b\nc") == "a\\|b c" and md("image_size") == "image_size"
    assert md("_x_") == "\\_x\\_" and md("") == "–"


def test_documents_absent_or_of_another_shape_leave_sections_empty():
    text = card(docs={"metrics.json": {"calibration": {"no": "temperature"}}})
    assert "0 classes, – images" in text and "Calibration" not in text
    assert "accuracy 0.9500" in text  # from the version's row
    assert "Drift against production: no version in production" in text


def test_changed_hyperparameters_against_the_defaults():
    values = {**Hyperparameters().effective(), "phase1_lr": 3e-4, "gone_name": 1}
    changed, defaults = changed_hyperparameters(values)
    assert changed == {"phase1_lr": 3e-4, "gone_name": 1}
    assert defaults == {"phase1_lr": 1e-3, "gone_name": None}
