"""The job page's model-quality sections (issue #17): label issues, the drift line, and
the calibration figures; every value escaped."""

from types import SimpleNamespace

from services.api.quality_sections import calibration_section, drift_line, label_issues_section


def test_label_issues_are_listed_ranked_with_the_picture():
    report = {
        "issues_found": 1,
        "images_checked": 40,
        "source": "out-of-fold <probabilities>",
        "issues": [
            {
                "rank": 1,
                "path": "b/<x>.png",
                "given_label": "b",
                "likely_label": "a",
                "confidence": 0.91,
                "given_label_prob": 0.04,
            }
        ],
    }
    html = label_issues_section(report, 7, "/root")
    assert 'src="/root/ui/jobs/7/label_issues.png"' in html
    assert "<td>b/&lt;x&gt;.png</td><td>b</td><td>a</td>" in html and "0.910" in html
    assert "&lt;probabilities&gt;" in html
    assert label_issues_section(None, 7, "") == ""
    failed = label_issues_section({"error": "no <features>", "issues": []}, 7, "")
    assert "the check failed: no &lt;features&gt;" in failed and "<img" not in failed
    none = label_issues_section({**report, "issues": [], "issues_found": 0}, 7, "")
    assert "no label issues found" in none and "<img" not in none


def test_drift_line_and_calibration_section():
    line = drift_line(
        {
            "production_version": 3,
            "total_variation": 0.25,
            "chi_square": {"p_value": 1e-5},
            "leakage_count": 2,
        }
    )
    assert "v3 in production" in line and "0.250" in line and "1e-05" in line
    assert "2 image(s)" in line and drift_line(None) == ""
    v = SimpleNamespace(model_name="m", version=2)
    cal = {
        "n_bins": 15,
        "ece_before": 0.12,
        "ece_after": 0.02,
        "temperature": 1.8,
        "validation_images": 30,
    }
    html = calibration_section(v, {"calibration": cal}, "")
    assert "ECE 0.1200 before, 0.0200 after" in html and "T = 1.8" in html
    assert 'src="/ui/models/m/versions/2/reliability.png"' in html
    assert calibration_section(v, {}, "") == "" and calibration_section(v, None, "") == ""
