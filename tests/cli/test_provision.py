"""`rentgate platform provision`: identities from the platform's CA, or a clear refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.cli import main
from tests.support.pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def provision(pki: Pki, out: Path, *who: str, ca_key: Path | None = None) -> int:
    ca = ["--ca-cert", str(pki.ca), "--ca-key", str(ca_key or pki.ca_key), "--out", str(out)]
    return main(["platform", "provision", *who, *ca])


def test_a_gateway_identity_names_the_gateway_and_prints_its_rules(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert provision(pki, tmp_path, "--gateway", "GW-0001") == 0
    out = capsys.readouterr().out
    assert "topic write rentgate/v1/GW-0001/events" in out
    assert "topic read rentgate/v1/GW-0001/cmd/#" in out
    cert = x509.load_pem_x509_certificate((tmp_path / "GW-0001.pem").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "GW-0001"
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    cert.verify_directly_issued_by(ca)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert oct((tmp_path / "GW-0001.key").stat().st_mode & 0o777) == "0o600"


def test_a_platform_identity_alone_may_publish_commands(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert provision(pki, tmp_path, "--platform", "ops") == 0
    out = capsys.readouterr().out
    assert "user platform-ops\ntopic write rentgate/v1/+/cmd/#\ntopic read rentgate/v1/#" in out
    assert (tmp_path / "platform-ops.pem").exists()


@pytest.mark.parametrize(
    ("who", "complaint"),
    [
        (["--gateway", "GW/1"], "only letters, digits, '-' and '_'"),
        (["--gateway", "GW-+"], "only letters, digits, '-' and '_'"),
        (["--gateway", "GW.1"], "NATS refuses '.'"),
        (["--gateway", "platform-main"], "may not start with"),
        (["--platform", "a b"], "must match"),
    ],
)
def test_names_that_could_break_the_acl_are_refused(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str], who: list[str], complaint: str
) -> None:
    assert provision(pki, tmp_path, *who) == 2
    assert complaint in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_identity_is_never_overwritten_and_a_wrong_ca_key_is_refused(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert provision(pki, tmp_path, "--gateway", "GW-0002") == 0
    before = (tmp_path / "GW-0002.pem").read_bytes()
    assert provision(pki, tmp_path, "--gateway", "GW-0002") == 2
    assert "not overwriting" in capsys.readouterr().err
    assert (tmp_path / "GW-0002.pem").read_bytes() == before
    other = tmp_path / "other"
    assert provision(pki, other, "--gateway", "GW-0003", ca_key=pki.server_key) == 2
    assert "does not belong to the CA certificate" in capsys.readouterr().err
    assert not other.exists() or list(other.iterdir()) == []
