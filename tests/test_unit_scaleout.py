"""`imray up` refuses embedded backends on a cluster of several machines, and only there."""

from __future__ import annotations

import pytest

from imray.scaleout import ScaleOutRefused, check_scale_out, scale_out_problems
from imray.settings import Settings

EMBEDDED = Settings()
SHARED = Settings(database_url="mysql+pymysql://imray:pw@10.77.0.5:3306/imray", s3_endpoint="10.77.0.5:9000")
TWO_HOSTS = ["10.77.0.2", "10.77.0.3", "10.77.0.3"]


@pytest.mark.parametrize("addresses", [[], ["127.0.0.1"], ["127.0.0.1"] * 3, ["10.77.0.2", ""]])
def test_one_address_is_fine_with_the_embedded_backends(addresses: list[str]) -> None:
    assert scale_out_problems(EMBEDDED, addresses) == []
    check_scale_out(EMBEDDED, addresses)  # no error: a laptop, or cluster_utils nodes on 127.0.0.1


def test_several_addresses_refuse_the_embedded_database_and_object_store_naming_the_settings() -> None:
    with pytest.raises(ScaleOutRefused) as refused:
        check_scale_out(EMBEDDED, TWO_HOSTS)
    message = str(refused.value)
    for setting in ("IMRAY_DATABASE_URL", "IMRAY_S3_ENDPOINT", "IMRAY_S3_ACCESS_KEY", "IMRAY_S3_SECRET_KEY"):
        assert setting in message
    assert "2 addresses (10.77.0.2, 10.77.0.3)" in message


def test_a_shared_database_with_a_local_object_store_is_still_refused() -> None:
    settings = EMBEDDED.replace(database_url=SHARED.database_url)
    problems = scale_out_problems(settings, TWO_HOSTS)
    assert len(problems) == 1 and "IMRAY_S3_ENDPOINT" in problems[0]
    with pytest.raises(ScaleOutRefused, match="IMRAY_S3_ENDPOINT"):
        check_scale_out(settings, TWO_HOSTS)


def test_a_shared_object_store_with_the_embedded_database_is_still_refused() -> None:
    settings = EMBEDDED.replace(s3_endpoint=SHARED.s3_endpoint)
    problems = scale_out_problems(settings, TWO_HOSTS)
    assert len(problems) == 1 and "IMRAY_DATABASE_URL" in problems[0]


def test_shared_backends_may_spread_over_any_number_of_machines() -> None:
    assert scale_out_problems(SHARED, TWO_HOSTS) == []
    check_scale_out(SHARED, [f"10.77.0.{i}" for i in range(2, 10)])


def test_the_refusal_is_a_settings_error() -> None:
    assert issubclass(ScaleOutRefused, ValueError)


def test_imray_up_on_several_machines_refuses_before_it_prepares_or_deploys_anything(
        monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from imray import cli, runtime

    for name in ("IMRAY_DATABASE_URL", "IMRAY_S3_ENDPOINT", "IMRAY_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    done: list[str] = []
    monkeypatch.setattr(cli, "_connect", lambda settings, address: done.append(f"connect {address}"))
    monkeypatch.setattr(cli, "_disconnect", lambda: done.append("disconnect"))
    monkeypatch.setattr(cli, "_node_addresses", lambda: TWO_HOSTS)
    monkeypatch.setattr(runtime, "prepare", lambda settings: done.append("prepare"))
    monkeypatch.setattr(runtime, "deploy", lambda *args: done.append("deploy"))
    code = cli.main(["--data-dir", str(tmp_path), "up", "--address", "10.77.0.2:6380", "--detach"])
    assert code == 2
    assert done == ["connect 10.77.0.2:6380", "disconnect"]
    assert "IMRAY_DATABASE_URL" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no SQLite file, no keys
