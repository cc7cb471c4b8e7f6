"""Screenshot of a served dashboard for the README: ``python docs/screenshot.py URL VOXEL OUT``.

Opens ``URL#voxel=VOXEL`` in headless Chromium (software WebGL), waits until both UMAPs, both flatmaps, the
inspector (with its series and stimulus images) have rendered, and saves the 1600x1000 viewport to OUT
(``.png``: palette-quantised and optimised; ``.jpg``: quality 88).
"""
from __future__ import annotations

import io
import sys
import time

from PIL import Image
from playwright.sync_api import sync_playwright

ARGS = ["--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
        "--disable-background-networking", "--disable-component-update", "--no-first-run"]


def main(url: str, voxel: int, out: str) -> int:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(240_000)
        page.goto(f"{url}/#voxel={voxel}")

        def wait(js):
            page.wait_for_function(js, polling=250, timeout=240_000)
        wait("['umap-off', 'umap-on'].every(id => document.querySelector('#' + id + ' canvas') && "
             "document.querySelector('#' + id + ' .js-plotly-plot')._fullData[0].x.length > 0)")
        wait("document.querySelectorAll('#flat-off image').length >= 2 && "
             "document.querySelectorAll('#flat-on image').length >= 2")
        wait(f"document.querySelector('#inspector h3') && "
             f"document.querySelector('#inspector h3').textContent === 'Voxel {voxel}'")
        wait("document.querySelector('#inspector-series .main-svg') !== null")
        wait("Array.from(document.querySelectorAll('#inspector img')).every(i => i.complete && i.naturalWidth > 0)")
        wait("['umap-off', 'umap-on'].every(id => "
             "document.querySelector('#' + id + ' .js-plotly-plot')._fullData[1].x.length === 1)")
        time.sleep(4)                     # software WebGL: let the last frames of the 3-D scenes land
        png = page.screenshot()
        browser.close()
    img = Image.open(io.BytesIO(png)).convert("RGB")
    if out.endswith(".png"):
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            out, optimize=True)
    else:
        img.save(out, quality=88, optimize=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
