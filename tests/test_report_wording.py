"""report.html says what a reader needs: why a column is empty, each failed file once,
counts in the right number, PSNR ticks that read as numbers when the values lie close."""

from __future__ import annotations

from rls.reports.run_files import COLUMNS, _csv_text, read_rows, write_summary
from rls.reports.run_html import build_report


def _run(tmp_path, rows, config="metrics:\n  lpips:\n  - alex\n"):
    full = []
    for values in rows:
        row = {k: "" for k in COLUMNS}
        row.update(scale="8", corruption="none", **values)
        full.append(row)
    (tmp_path / "results.csv").write_text(_csv_text(full))
    (tmp_path / "config.yaml").write_text(config)
    write_summary(tmp_path, read_rows(tmp_path / "results.csv"))
    return build_report(tmp_path).read_text()


BROKEN = "/data/broken.png: UnidentifiedImageError"


def _rows():
    ok = [dict(image_id="face", method=m, psnr=p, status="ok", steps="5", seconds="1")
          for m, p in (("rls", "22.44312"), ("rls_plus", "22.44318"))]  # fmt: skip
    failed = [dict(image_id="broken", method=m, status="failed", notes=BROKEN)
              for m in ("rls", "rls_plus")]  # fmt: skip
    return ok + failed


def test_failed_files_are_listed_once_each_and_counts_agree_in_number(tmp_path):
    page = _run(tmp_path, _rows())
    assert page.count("<li><b>broken</b>") == 1
    assert f"<li><b>broken</b>: {BROKEN}</li>" in page  # every method: no method list
    assert "1 image failed." in page and "2 images · methods" in page
    assert "1 images" not in page
    one_method = [*_rows(), dict(image_id="odd", method="rls", status="failed", notes="nan")]
    assert "<li><b>odd</b>: nan (rls)</li>" in _run(tmp_path, one_method)


def test_an_empty_metric_column_says_why(tmp_path):
    page = _run(tmp_path, _rows())
    assert "LPIPS: its backbone weights were not found" in page
    assert "flow NLL: no flow prior was loaded" in page
    assert "latent error: only for generator-sampled targets" in page
    off = _run(tmp_path, _rows(), config="metrics:\n  lpips: []\n")
    assert "LPIPS: it was switched off (metrics.lpips=[])" in off


def test_close_psnr_values_get_a_readable_axis():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from rls.reports.tradeoff import MIN_DB_SPAN, readable_db_axis

    fig, ax = plt.subplots()
    xs = [22.44312, 22.44318, 22.44301]
    ax.scatter(xs, [1, 2, 3])
    readable_db_axis(ax, xs)
    fig.canvas.draw()
    low, high = ax.get_xlim()
    assert high - low >= MIN_DB_SPAN - 1e-9
    assert ax.xaxis.get_major_formatter().get_offset() == ""  # no "1e-5+2.24431e1"
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert 2 <= len(labels) <= 7 and all(len(label) <= 6 for label in labels), labels
    plt.close(fig)
