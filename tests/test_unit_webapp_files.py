"""The gateway's /app file answers (imray/deployments/webapp.py), on a directory of our own."""

from __future__ import annotations

import json

from imray.deployments.webapp import webapp_response


def test_an_app_that_was_not_built_is_a_404_saying_to_run_make(tmp_path):
    answer = webapp_response("", tmp_path)
    assert answer.status_code == 404
    assert "run `make`" in json.loads(bytes(answer.body))["detail"]


def test_the_index_scripts_and_styles_come_with_their_types_and_a_strict_policy(tmp_path):
    for name, body in (("index.html", "<!doctype html>"), ("main.js", "export {}"), ("style.css", "body{}")):
        (tmp_path / name).write_text(body)
    (tmp_path / "sdk").mkdir()
    (tmp_path / "sdk" / "index.js").write_text("export {}")
    for path, kind in (("", "text/html"), ("index.html", "text/html"), ("main.js", "text/javascript"),
                       ("style.css", "text/css"), ("sdk/index.js", "text/javascript")):
        answer = webapp_response(path, tmp_path)
        assert answer.status_code == 200 and answer.media_type.startswith(kind), path
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "script-src 'self'" in answer.headers["content-security-policy"]


def test_nothing_outside_the_app_or_of_another_type_is_served(tmp_path):
    app = tmp_path / "webapp"
    app.mkdir()
    (app / "index.html").write_text("<!doctype html>")
    (app / "notes.txt").write_text("not a web file")
    (tmp_path / "secret.js").write_text("no")
    for path in ("../secret.js", "notes.txt", "missing.js", "/etc/passwd", "sdk/../../secret.js"):
        assert webapp_response(path, app).status_code == 404, path
