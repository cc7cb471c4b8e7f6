"""The dashboard's Flask routes (viewer folder, PNGs) and its command line, with Flask's test client.

The viewer route must serve the files of the run's viewer folder and nothing else: every traversal
attempt below answers 404 and never leaks the content of the file it aims at.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
import pytest
from PIL import Image

from core.outputs.reader import open_results
from core.testing.synthetic import make_synthetic_results
from dashboard import app as app_module
from dashboard.app import ASSETS_FOLDER, create_app, is_loopback, main, parse_args
from dashboard.data import FilterState
from dashboard.flatmaps import flatmap_filter_layer
from dashboard.server import png_bytes, safe_path

SECRET = "do-not-serve-this-7f3a"


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    out = make_synthetic_results(tmp_path_factory.mktemp("res"), n_voxels=400, n_test=40, k=6, seed=1,
                                 flatmap_height=64)
    res = open_results(out)
    viewer = res.asset_dir("cortex") / "viewer"
    # Targets of the traversal attempts: a file beside the viewer folder, one at the results root, a hidden
    # file and a symlink inside the viewer folder that lead out of it.
    (viewer.parent / "secret.txt").write_text(SECRET)
    (Path(out) / "secret.txt").write_text(SECRET)
    (viewer / ".hidden").write_text(SECRET)
    os.symlink(viewer.parent / "secret.txt", viewer / "link.txt")
    (viewer / "sub").mkdir()
    (viewer / "sub" / "ok.js").write_text("// fine")
    return out


@pytest.fixture(scope="module")
def app(results_dir):
    return create_app(open_results(results_dir))


@pytest.fixture(scope="module")
def client(app):
    return app.server.test_client()


@pytest.fixture(scope="module")
def data(app):
    return app.attnbrain_data


# ---------------------------------------------------------------------------------------------- viewer route
def test_viewer_serves_its_own_files(client, data):
    index = (data.viewer_dir / "index.html").read_bytes()
    for url in (data.viewer_url, f"{data.url_prefix}/viewer/"):
        resp = client.get(url)
        assert resp.status_code == 200 and resp.data == index
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get(f"{data.url_prefix}/viewer/data.json").status_code == 200
    assert client.get(f"{data.url_prefix}/viewer/sub/ok.js").data == b"// fine"


@pytest.mark.parametrize("tail", [
    "../secret.txt", "../../../secret.txt", "sub/../../secret.txt", "%2e%2e/secret.txt", "%2E%2E%2Fsecret.txt",
    "..%2fsecret.txt", "%252e%252e%252fsecret.txt", "..%5csecret.txt", "..\\secret.txt", ".hidden", "link.txt",
    "sub/../.hidden", "/etc/passwd", "%2fetc%2fpasswd", "secret.txt%00.html", "./index.html", "sub//ok.js",
    "missing.html", "sub",
])
def test_viewer_rejects_traversal(client, data, tail):
    resp = client.get(f"{data.url_prefix}/viewer/{tail}")
    # 404 for everything; a redirect would only be acceptable if it never leaked, but none is expected.
    assert resp.status_code == 404, (tail, resp.status_code)
    assert SECRET.encode() not in resp.data


def test_safe_path_unit(tmp_path):
    root = tmp_path / "viewer"
    (root / "a").mkdir(parents=True)
    (root / "a" / "f.txt").write_text("x")
    (tmp_path / "outside.txt").write_text("y")
    os.symlink(tmp_path / "outside.txt", root / "out.txt")
    os.symlink(root / "a" / "f.txt", root / "in.txt")
    assert safe_path(root, "a/f.txt") == (root / "a" / "f.txt").resolve()
    assert safe_path(root, "in.txt") == (root / "a" / "f.txt").resolve()       # a link that stays inside
    for bad in ("../outside.txt", "out.txt", "a", "", "a/", "/a/f.txt", "a\\f.txt", "a/f.txt\x00", ".x"):
        assert safe_path(root, bad) is None, bad
    assert safe_path(None, "a/f.txt") is None


def test_viewer_is_not_an_asset(app, client):
    # Dash injects every file of assets/ into the page; the viewer must never be among them.
    assert Path(app.config.assets_folder) == ASSETS_FOLDER
    page = client.get("/").data.decode()
    assert "attnbrain.js" in page and "attnbrain.css" in page
    assert "viewer" not in " ".join(p.name for p in ASSETS_FOLDER.iterdir())


# ---------------------------------------------------------------------------------------------- PNG routes
def _png(resp) -> np.ndarray:
    assert resp.status_code == 200 and resp.mimetype == "image/png"
    return np.asarray(Image.open(io.BytesIO(resp.data)))


def test_stimulus_pngs_are_the_stored_arrays(client, data, rng):
    for i in rng.choice(data.thumbs.shape[0], 4, replace=False):
        # PNG is lossless: the decoded image equals the memory-mapped array exactly.
        np.testing.assert_array_equal(_png(client.get(data.pixel_url("thumb", int(i)))), data.thumbs[i])
        np.testing.assert_array_equal(_png(client.get(data.pixel_url("overlay", int(i)))), data.overlays[i])
    n = data.thumbs.shape[0]
    for url in (data.pixel_url("thumb", n), f"{data.url_prefix}/stimulus/thumb/-1.png",
                f"{data.url_prefix}/stimulus/raw/0.png", "/attnbrain/other-run/stimulus/thumb/0.png"):
        assert client.get(url).status_code == 404


def test_flatmap_images_and_filter_layers(client, data):
    fm = data.flatmap
    resp = client.get(data.flatmap_url("on"))
    assert resp.status_code == 200 and resp.data == (fm.folder / fm.images["on"]).read_bytes()
    for bad in ("nope", "..%2fflatmap_on", "flatmap_on"):
        assert client.get(f"{data.url_prefix}/flatmap/{bad}.png").status_code == 404
    state = FilterState(rule="q", bins=(2, 3), hemis=("L",), threshold=0.4, ns="hidden")
    layer = _png(client.get(data.flatmap_layer_url("off", state)))
    expected = flatmap_filter_layer(fm.lookup, data.stored_bins["off"], data.bins("off", "q"),
                                    data.visible("off", state))
    np.testing.assert_array_equal(layer, expected)
    assert (layer[..., 3] > 0).any(), "this filter state must veil or recolour some pixels"
    query = dict(parse_qsl(state.to_query()))
    for key, value in (("bins", "9"), ("rule", "perm"), ("rois", "Nowhere"), ("thr", "x"), ("ns", "gone")):
        bad = "&".join(f"{k}={v}" for k, v in {**query, key: value}.items())
        resp = client.get(f"{data.url_prefix}/flatmap/off/filtered.png?{bad}")
        assert resp.status_code == 400, (key, value)
    assert client.get(f"{data.url_prefix}/flatmap/uniform/filtered.png").status_code == 200
    assert client.get(f"{data.url_prefix}/flatmap/nope/filtered.png").status_code == 404


def test_png_bytes_checks_shape():
    with pytest.raises(ValueError, match="height, width, 3"):
        png_bytes(np.zeros((4, 4), np.uint8))


def test_the_app_never_writes_to_the_results(results_dir, client, data):
    def snapshot():
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(results_dir).rglob("*")
                if p.is_file() and "index" not in p.parts}
    before = snapshot()
    client.get("/_dash-layout")
    client.get(data.pixel_url("overlay", 0))
    client.get(data.flatmap_layer_url("on", FilterState(ns="hidden")))
    assert snapshot() == before


# ---------------------------------------------------------------------------------------------- layout + CLI
def test_layout_without_cortex_assets_hides_brain_views_and_says_why(tmp_path):
    out = make_synthetic_results(tmp_path, n_voxels=300, n_test=40, k=5, seed=2, with_assets=False)
    app = create_app(open_results(out))
    layout = app.server.test_client().get("/_dash-layout").data.decode()
    assert "the cortex stage of this run was not run" in layout and "No 3-D viewer" in layout
    assert '"flat-off"' not in layout and '"viewer-frame"' not in layout
    assert '"umap-off"' in layout and '"umap-on"' in layout
    keys = " ".join(app.callback_map)
    assert "flat-off.figure" not in keys


def test_cli_defaults_are_loopback_and_no_debug():
    args = parse_args(["--results", "somewhere"])
    assert (args.host, args.port, args.debug, args.run) == ("127.0.0.1", 8050, False, None)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2", "[::1]"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        assert not is_loopback(host), host


def test_cli_reports_bad_results_folders(tmp_path, capsys):
    assert main(["--results", str(tmp_path / "missing")]) == 2
    assert "results folder not found" in capsys.readouterr().err


def test_the_server_answers_while_the_process_holds_over_1024_descriptors(results_dir, monkeypatch):
    # Every memory-mapped array of an open run holds a descriptor (Python's mmap keeps a duplicate), so a
    # dashboard over a large run or a study can hold more than 1024; select() cannot watch a descriptor
    # numbered 1024 or above and waitress's loop would die without answering. The server runs here with
    # the very settings ``main`` passes to waitress, with 1100 descriptors held.
    import resource
    import threading
    import urllib.request

    import waitress
    from waitress import create_server, wasyncore
    served = {}
    monkeypatch.setattr(waitress, "serve", lambda app, **kw: served.update(kw, app=app))
    assert main(["--results", str(results_dir)]) == 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.skip(f"the hard descriptor limit ({hard}) is below 1200")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        kw = {k: v for k, v in served.items() if k not in ("app", "port", "host")}
        server = create_server(served["app"], host="127.0.0.1", port=0, **kw)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.effective_port}/", timeout=30) as resp:
                assert resp.status == 200 and b"<html" in resp.read().lower()
        finally:
            server.task_dispatcher.shutdown()
            wasyncore.close_all(server._map)
            thread.join(timeout=5)
    finally:
        for fd in held:
            os.close(fd)
        if soft < 1200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_cli_warns_off_loopback_and_refuses_debug_there(results_dir, monkeypatch, capsys):
    served = {}
    import waitress
    monkeypatch.setattr(waitress, "serve", lambda app, **kw: served.update(kw))
    assert main(["--results", str(results_dir), "--host", "0.0.0.0", "--port", "9999"]) == 0
    err = capsys.readouterr().err
    assert "warning: serving on 0.0.0.0:9999" in err
    assert served == {"host": "0.0.0.0", "port": 9999, "threads": 8, "asyncore_use_poll": True}
    assert main(["--results", str(results_dir), "--host", "0.0.0.0", "--debug"]) == 2
    assert "--debug on a non-loopback address" in capsys.readouterr().err
    served.clear()
    assert main(["--results", str(results_dir)]) == 0
    assert served["host"] == "127.0.0.1" and "warning" not in capsys.readouterr().err
    assert app_module.ASSETS_FOLDER.is_dir()


def test_run_selection_by_id(results_dir, capsys):
    run_id = json.loads(next(Path(results_dir).glob("*/summary.json")).read_text())["run_id"]
    assert main(["--results", str(results_dir), "--run", "no-such-run", "--port", "1"]) == 2
    assert "no finished run 'no-such-run'" in capsys.readouterr().err
    assert open_results(results_dir, run_id).run_id == run_id


# ---------------------------------------------------------------------------------------------- exposure (issue 10)
def test_traversal_through_a_linked_folder_and_other_encodings(results_dir, client, data):
    viewer = data.viewer_dir
    if not (viewer / "linkdir").exists():
        os.symlink(viewer.parent, viewer / "linkdir")        # a folder link leading out of the viewer folder
    for tail in ("linkdir/secret.txt", "linkdir%2fsecret.txt", "%2e%2e%2f%2e%2e%2fsecret.txt",
                 "..%252f..%252fsecret.txt", "%252e%252e/secret.txt", "%c0%ae%c0%ae/secret.txt",
                 "..;/secret.txt", "sub/..%2f..%2fsecret.txt", f"{results_dir}/secret.txt".lstrip("/"),
                 "%2f" + f"{results_dir}/secret.txt".lstrip("/").replace("/", "%2f")):
        resp = client.get(f"{data.url_prefix}/viewer/{tail}")
        assert resp.status_code == 404, (tail, resp.status_code)
        assert SECRET.encode() not in resp.data
    assert client.get(f"{data.url_prefix}/viewer//{results_dir}/secret.txt").status_code == 404


@pytest.mark.parametrize("url", [
    "/assets/../dashboard/app.py", "/assets/%2e%2e/dashboard/app.py", "/assets/..%2fdashboard%2fapp.py",
    "/assets/%252e%252e%252fREADME.md", "/static/../README.md", "/static/%2e%2e/README.md",
    "/_dash-component-suites/dash/../../../README.md", "/_dash-component-suites/dash/%2e%2e%2f%2e%2e%2fREADME.md",
    "/_dash-component-suites/dash/..%2f..%2f..%2fflask%2f__init__.py", "/assets//etc/passwd",
    "/attnbrain/../../README.md", "/attnbrain/%2e%2e/README.md",
])
def test_static_routes_stay_in_their_folders(client, url):
    # Some of these would reach Dash's catch-all page (200) or its component-suite check (500, no leak);
    # the app's traversal guard answers all of them with a plain 404 first.
    resp = client.get(url)
    assert resp.status_code in (400, 404), (url, resp.status_code)
    assert b"root:" not in resp.data and b"import argparse" not in resp.data and b"<!DOCTYPE" not in resp.data


def test_results_are_memory_mapped_and_never_unpickled(results_dir):
    res = open_results(results_dir)
    for name in ("dataset", "encoding", "stats", "rsa", "umap"):
        for aname, arr in res.stage(name).arrays.items():
            assert isinstance(arr, np.memmap), (name, aname)
    # The diskcache index holds JSON text only (diskcache stores str natively, never pickled).
    import diskcache
    with diskcache.Cache(str(Path(results_dir) / "cache" / "index")) as index:
        keys = list(index)
        assert keys and all(isinstance(k, str) for k in keys)
        for k in keys:
            value = index.get(k)
            assert isinstance(value, str), (k, type(value))
            json.loads(value)


def test_no_loader_can_unpickle():
    """Every np.load in core/ and dashboard/ leaves allow_pickle off, every torch.load is weights_only, and no
    module calls pickle.load(s) directly (numpy's own default is allow_pickle=False)."""
    import ast
    import inspect
    assert inspect.signature(np.load).parameters["allow_pickle"].default is False
    root = Path(__file__).resolve().parents[1]
    problems = []
    for path in [*(root / "core").rglob("*.py"), *(root / "dashboard").rglob("*.py"), root / "precompute.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
            where = f"{path.relative_to(root)}:{node.lineno}"
            if name in ("np.load", "numpy.load") and kw.get("allow_pickle", "False") != "False":
                problems.append(f"{where} np.load allow_pickle={kw['allow_pickle']}")
            if name == "torch.load" and kw.get("weights_only") != "True":
                problems.append(f"{where} torch.load without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "cPickle.load", "joblib.load", "pd.read_pickle"):
                problems.append(f"{where} {name}")
    assert not problems, problems


def test_debug_is_off_unless_asked(results_dir, monkeypatch, capsys):
    import dash
    import waitress
    app = create_app(open_results(results_dir))
    assert app.server.debug is False and not app._dev_tools["ui"] and not app._dev_tools["hot_reload"]
    page = app.server.test_client().get("/").data.decode()
    assert '"ui":false' in page
    ran = {}
    monkeypatch.setattr(waitress, "serve", lambda wsgi, **kw: ran.update(waitress=kw))
    monkeypatch.setattr(dash.Dash, "run", lambda self, **kw: ran.update(dash_run=kw))
    assert main(["--results", str(results_dir)]) == 0
    assert "waitress" in ran and "dash_run" not in ran
    ran.clear()
    assert main(["--results", str(results_dir), "--debug"]) == 0
    assert ran == {"dash_run": {"host": "127.0.0.1", "port": 8050, "debug": True}}


def test_workers_serve_with_gunicorn_forked_from_the_opened_run(results_dir, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(app_module, "serve_workers", lambda wsgi, **kw: calls.append((wsgi, kw)))
    assert main(["--results", str(results_dir), "--workers", "3"]) == 0
    ((wsgi, kw),) = calls
    assert kw == {"host": "127.0.0.1", "port": 8050, "workers": 3, "threads": 4}
    assert wsgi.name.startswith("dashboard")          # the Flask server of the app built before the fork
    assert "3 worker processes" in capsys.readouterr().out
    assert main(["--results", str(results_dir), "--workers", "2", "--debug"]) == 2
    assert "drop --workers or --debug" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--results", "x", "--workers", "0"])


def test_no_route_writes_anything(results_dir, client, data):
    """GETs, callbacks and refused methods on every route leave every byte of the results folder as it was."""
    from dashboard.ids import FILTER_MSG, SELECTED, umap_graph

    def snapshot():
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(results_dir).rglob("*")
                if p.is_file() or p.is_symlink()}
    before = snapshot()
    for url in ("/", "/_dash-layout", "/_dash-dependencies", data.viewer_url, data.pixel_url("thumb", 1),
                data.flatmap_url("off"), data.flatmap_layer_url("off", FilterState(rule="q"))):
        assert client.get(url).status_code == 200, url
    deps = json.loads(client.get("/_dash-dependencies").data)
    assert any(d["output"].startswith(SELECTED) or SELECTED in d["output"] for d in deps)
    click = {"points": [{"curveNumber": 0, "pointNumber": 3, "x": 0, "y": 0, "z": 0}]}
    body = {"output": f"{SELECTED}.data", "outputs": {"id": SELECTED, "property": "data"},
            "inputs": [{"id": umap_graph("off"), "property": "clickData", "value": click}],
            "changedPropIds": [f"{umap_graph('off')}.clickData"]}
    client.post("/_dash-update-component", json=body)        # answered or refused, it must not write
    assert FILTER_MSG
    for method in ("put", "delete", "patch"):
        for url in (data.viewer_url, data.pixel_url("thumb", 1), data.flatmap_url("on"), "/_dash-layout"):
            assert getattr(client, method)(url).status_code in (404, 405), (method, url)
    assert client.post(data.viewer_url).status_code in (404, 405)
    assert snapshot() == before


def test_suspicious_path_unit(client):
    from dashboard.server import suspicious_path
    for ok in ("/", "/_dash-layout", "/assets/attnbrain.css", "/attnbrain/run-1/viewer/index.html",
               "/_dash-component-suites/dash/deps/react@18.3.1.v4_4_1m17.min.js", "/attnbrain/r/stimulus/thumb/3.png",
               "/attnbrain/r/viewer/resources/js/ctm.js", "/attnbrain/r/viewer/.../x"):
        assert not suspicious_path(ok), ok
    for bad in ("/a/../b", "/a/./b", "/a//b", "/a\\b", "/a/%2e%2e/b", "/a/%2F", "/a\x00", "/a/%5c", "/.."):
        assert suspicious_path(bad), bad
    assert client.get("/_dash-dependencies").status_code == 200
