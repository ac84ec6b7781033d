"""The job page's data-health section lists each label conflict with both paths and
both classes."""

from services.api.quality_sections import health_section


def test_label_conflicts_are_listed_with_both_paths_and_classes():
    health = {
        "images": 4,
        "classes": 2,
        "imbalance_ratio": 1.0,
        "findings": [
            {
                "kind": "label_conflicts",
                "count": 1,
                "message": "1 picture(s) filed under two classes, e.g. ...",
            }
        ],
        "label_conflicts": [
            {
                "a": "cats/1.png",
                "a_class": "cats",
                "b": "dogs/<1>.png",
                "b_class": "dogs",
                "how": "same bytes",
            }
        ],
    }
    html = health_section(health)
    assert '<li data-kind="label_conflicts">' in html
    assert (
        '<table id="label-conflicts">' in html
        and "<td>cats/1.png</td><td>cats</td>"
        "<td>dogs/&lt;1&gt;.png</td><td>dogs</td><td>same bytes</td>"
        in html
    )


def test_no_conflicts_no_table():
    assert "label-conflicts" not in health_section({"findings": [], "label_conflicts": []})
