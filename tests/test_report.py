"""report.html: self-contained (inline images and CSS), with the table, plot and grids."""

import re

import torch

from rls.reports.run_files import ShardWriter, image_path, merge, save_png, write_summary
from rls.reports.run_html import build_report


def _run_dir(tmp_path, with_lpips=False):
    rows = []
    for i, image_id in enumerate(["img0", "img1"]):
        save_png(image_path(tmp_path, "lr", image_id), torch.rand(3, 4, 4))
        save_png(image_path(tmp_path, "hr", image_id), torch.rand(3, 32, 32))
        for method, psnr in [("rls", 20.0 + i), ("rls_plus", 22.0 + i)]:
            save_png(image_path(tmp_path, method, image_id), torch.rand(3, 32, 32))
            rows.append(
                {
                    "image_id": image_id,
                    "method": method,
                    "scale": 8,
                    "corruption": "gaussian_noise",
                    "psnr": psnr,
                    "ssim": 0.6,
                    "lpips": 0.3 if with_lpips else None,
                    "lr_psnr": 30.0,
                    "flow_nll": 50.0 - psnr,
                    "steps": 10,
                    "seconds": 0.5,
                    "status": "ok",
                    "notes": "perceptual term off: weights missing" if method == "rls" else "",
                }
            )
    rows.append({"image_id": "broken.png", "method": "rls", "status": "failed",
                 "notes": "cannot identify image file"})  # fmt: skip
    ShardWriter(tmp_path).write(rows)
    write_summary(tmp_path, merge(tmp_path))
    (tmp_path / "config.yaml").write_text("scale: 8\n")
    return tmp_path


def test_report_is_self_contained_and_complete(tmp_path):
    path = build_report(_run_dir(tmp_path))
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    sources = re.findall(r'src="([^"]*)"', page)
    # 2 images x (LR + 2 methods + HR) + the plot; nothing fetched from disk or network
    assert len(sources) == 2 * 4 + 1
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert "rls_plus" in page and "20.5 ± 0.71" in page  # rls mean ± std of PSNR (20, 21)
    assert "perceptual term off: weights missing" in page  # notes column
    assert "broken.png" in page and "cannot identify image file" in page  # failures listed
    assert "realism-fidelity plot" in page


def test_report_without_realism_measures_still_renders(tmp_path):
    run_dir = tmp_path
    ShardWriter(run_dir).write([{"image_id": "a", "method": "wplus", "status": "ok", "psnr": 1}])
    merge(run_dir)
    page = build_report(run_dir).read_text()
    assert "No realism measure" in page and "(missing)" in page


def test_wandb_grid_is_lr_methods_hr_side_by_side_as_uint8():
    from callbacks.search_wandb import comparison_grid, to_uint8_hwc

    lr = torch.zeros(3, 4, 4)
    lr[0] = 1.0
    grid = comparison_grid(lr, [torch.full((3, 32, 32), 0.5)] * 2, torch.ones(3, 32, 32))
    assert grid.shape == (3, 32, 32 * 4)
    array = to_uint8_hwc(grid)
    assert array.shape == (32, 128, 3) and str(array.dtype) == "uint8"
    assert tuple(array[0, 0]) == (255, 0, 0)  # the LR, upscaled by nearest neighbour
    assert tuple(array[0, 40]) == (128, 128, 128) and tuple(array[0, 127]) == (255, 255, 255)


def test_report_names_the_leader_on_each_axis_and_shows_the_face_columns(tmp_path):
    """Face columns reach the table, and one line names the best method per measured axis
    (never the ground truth's own row)."""
    from rls.reports.run_html import leaders

    rows = []
    values = {  # method: (psnr, flow_nll, face_detected, face_score, identity, landmarks)
        "bicubic": (19.0, None, 0.0, -0.6, 0.9, 3.0),
        "rls": (18.0, 30.0, 1.0, 0.8, 0.5, 1.5),
        "rls_plus": (18.5, 200.0, 1.0, 0.4, 0.45, 1.8),
    }
    for image_id in ("a", "b"):
        for method, (psnr, nll, found, score, ident, lmd) in values.items():
            rows.append({"image_id": image_id, "method": method, "scale": 4, "psnr": psnr,
                         "flow_nll": nll, "face_detected": found, "face_score": score,
                         "identity_distance": ident, "landmark_distance": lmd,
                         "status": "ok"})  # fmt: skip
        rows.append({"image_id": image_id, "method": "ground_truth", "face_detected": 1.0,
                     "identity_distance": 0.0, "status": "ok"})  # fmt: skip
    ShardWriter(tmp_path).write(rows)
    summary = write_summary(tmp_path, merge(tmp_path))
    lead = leaders(summary)
    assert lead["psnr"][0] == "bicubic" and lead["flow_nll"][0] == "rls"
    assert lead["face_detected"][0] in ("rls", "rls_plus")
    assert lead["identity_distance"] == ("rls_plus", 0.45)  # not the ground truth's 0
    assert lead["landmark_distance"][0] == "rls"
    page = build_report(tmp_path).read_text()
    assert "face found ↑" in page and "identity dist. ↓" in page and "landmarks (px) ↓" in page
    assert "Leads on each axis:" in page and "identity dist. ↓: rls_plus (0.45)" in page
