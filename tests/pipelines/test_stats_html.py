"""stats.html in a real headless browser (Debian's chromium, when installed): at a laptop's
1400 px the feature cards sit three to a row and nothing overflows sideways, nor on a phone."""

import json
import shutil
import subprocess

import pytest

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(b)), None)
# written into the page's DOM once it has laid out: horizontal overflow and grid columns
PROBE = """<script>addEventListener('load', () => {
  document.body.dataset.overflow = document.documentElement.scrollWidth - window.innerWidth;
  document.body.dataset.columns =
    getComputedStyle(document.querySelector('.grid')).gridTemplateColumns.split(' ').length;
})</script>"""


@pytest.mark.skipif(BROWSER is None, reason="no headless chromium (apt-get install chromium)")
def test_stats_html_fits_the_window(tmp_path):
    import re

    import shardforge.features as sf
    from shardforge.examples import clicklog
    from shardforge.pipelines.cli_stats import write_html
    from shardforge.pipelines.skew import read_rows, stats_doc
    from shardforge.pipelines.validate import Anomaly
    from tests.pipelines.helpers import CLICK_FEATURES

    fs = sf.load_feature_set(CLICK_FEATURES)
    path = clicklog.columns_to_csv(str(tmp_path / "clicks.csv"),
                                   clicklog.generate_clicklog(2000, seed=0))
    doc = stats_doc(fs, read_rows(fs, path))
    doc["by_split"]["eval"] = doc["by_split"]["train"]  # two splits, as a job writes
    page = tmp_path / "stats.html"
    write_html(json.loads(json.dumps(doc)), str(page),
               [Anomaly("query", "inputs", "COMPARATOR_L_INFTY_HIGH", "a long description " * 20)])
    page.write_text(page.read_text() + PROBE)
    for width, columns in ((1400, 3), (420, 1)):
        dom = subprocess.run(
            [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--window-size={width},900", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120).stdout
        body = re.search(r"<body([^>]*)>", dom).group(1)
        assert int(re.search(r'data-overflow="(-?\d+)"', body).group(1)) <= 0, width
        assert int(re.search(r'data-columns="(\d+)"', body).group(1)) == columns, width
