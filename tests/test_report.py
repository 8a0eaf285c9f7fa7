"""`weir report NAME -o FILE`: one self-contained HTML file with the plots' data and every decision's evidence."""

from __future__ import annotations

import json
import re

from control_plane.ui.report import render_report
from tests.test_cli import make_server, no_env, policy_file, weir  # noqa: F401


def embedded(text: str) -> dict:
    match = re.search(r"<script>window\.WEIR_DATA = (.*?);</script>", text, re.S)
    assert match, "no data in the report"
    return json.loads(match.group(1))


def test_report_is_self_contained_and_has_every_event(make_server, policy_file, tmp_path, capsys):  # noqa: F811
    server = make_server(("pass",))
    assert weir(server, "apply", "-f", policy_file()) == 0
    server.ticks(12)
    out = tmp_path / "report.html"
    assert weir(server, "report", "echo", "-o", str(out), token="weir_cli-viewer") == 0
    said = capsys.readouterr().out
    assert str(out) in said and "Succeeded" in said
    text = out.read_text()
    # Nothing to fetch: no external script, style, image or font.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    assert "<script src" not in text and '<link rel="stylesheet"' not in text
    assert "uPlot" in text and "sloProgress" in text and ".badge" in text  # the library, the script, the styles
    data = embedded(text)
    assert data["rollout"]["name"] == "echo" and data["rollout"]["phase"] == "Succeeded"
    events = data["events"]
    assert [e["kind"] for e in events][0] == "created" and events[-1]["phase_to"] == "Succeeded"
    decided = [e for e in events if e["verdict"]]
    assert decided and all("outcome" in e["verdict"] for e in decided)
    assert data["series"]["rollout"] == "echo" and "proxies" in data


def test_report_data_cannot_close_its_script_element():
    data = {"rollout": {"name": "x</script><script>alert(1)</script>", "phase": "Failed"}, "events": [
        {"reason": "</script><!-- \u2028"}], "series": None, "proxies": None}
    text = render_report(data)
    body = text.split("<script>window.WEIR_DATA = ", 1)[1].split(";</script>", 1)[0]
    assert "</script" not in body and "<!--" not in body
    assert embedded(text)["rollout"]["name"] == data["rollout"]["name"]
    assert "&lt;/script&gt;" in text.split("<main", 1)[0]  # the title is escaped too


def test_report_of_an_unknown_rollout_is_an_error(make_server, tmp_path, capsys):  # noqa: F811
    server = make_server()
    assert weir(server, "report", "nope", "-o", str(tmp_path / "r.html")) == 1
    assert "no rollout named 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
