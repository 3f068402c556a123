"""`rentgate voucher binding-key | issue | verify`: through the command line, with real key
files, a real PNG read back by a real QR decoder, and one run as a separate process."""

from __future__ import annotations

import io
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
import zxingcpp

from gateway.cli.voucher import EXIT_REJECTED, EXIT_USAGE, main
from gateway.domain.signing import SigningKey

HOLDER = "330106199003071236"
OTHER_PERSON = "11010519491231002X"


@dataclass
class Platform:
    private: Path
    public: Path
    keydir: Path
    binding: Path


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    private, public = SigningKey.generate().save(tmp_path / "keys")
    binding = tmp_path / "binding.key"
    assert main(["voucher", "binding-key", "--out", str(binding)]) == 0
    return Platform(private, public, tmp_path / "keys", binding)


def issue_args(platform: Platform, *extra: str, valid_until: str = "2099-12-31") -> list[str]:
    return [
        "voucher",
        "issue",
        "--key",
        str(platform.private),
        "--binding-key",
        str(platform.binding),
        "--registration",
        "330106-2025-000123",
        "--name",
        "张伟",
        "--id-number",
        HOLDER,
        "--building",
        "西溪花园7幢",
        "--unit",
        "1203",
        "--registered-on",
        "2025-03-01",
        "--valid-until",
        valid_until,
        *extra,
    ]


def issued(platform: Platform, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert main(issue_args(platform, *extra)) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("RV1:")
    return out


def test_binding_key_file_is_private_hex_and_never_overwritten(platform: Platform) -> None:
    text = platform.binding.read_text()
    assert len(bytes.fromhex(text.strip())) == 32
    assert stat.S_IMODE(platform.binding.stat().st_mode) == 0o600
    assert main(["voucher", "binding-key", "--out", str(platform.binding)]) == EXIT_USAGE
    assert platform.binding.read_text() == text


def test_issue_then_verify_says_whose_voucher_it_is(
    platform: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    text = issued(platform, capsys)
    assert main(["voucher", "verify", "--keys", str(platform.public), text]) == 0
    out = capsys.readouterr().out
    assert out.startswith("VALID voucher ")
    for part in (
        "张伟",
        "330***********1236",
        "西溪花园7幢, unit 1203",
        "2025-03-01",
        "2099-12-31",
    ):
        assert part in out
    assert HOLDER not in out


def test_issue_tells_size_and_qr_version_without_personal_data(
    platform: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(issue_args(platform)) == 0
    captured = capsys.readouterr()
    found = re.search(r"(\d+) characters, QR version (\d+)-M", captured.err)
    assert found, captured.err
    assert int(found[1]) <= 350
    assert int(found[2]) <= 11
    assert "张*" in captured.err
    assert "330***********1236" in captured.err
    assert "张伟" not in captured.err
    assert HOLDER not in captured.err


def test_issue_draws_a_png_a_real_decoder_reads_back(
    platform: Platform, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    png, svg = tmp_path / "voucher.png", tmp_path / "voucher.svg"
    text = issued(platform, capsys, "--png", str(png), "--svg", str(svg))
    image = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    assert image is not None
    (read,) = zxingcpp.read_barcodes(
        image, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
    )
    assert read.text == text
    assert svg.read_text().lstrip().startswith("<?xml")


def test_verify_takes_keys_from_several_files_or_a_directory(
    platform: Platform, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = issued(platform, capsys)
    _, other_public = SigningKey.generate().save(tmp_path / "other")
    # argparse puts TEXT among the --keys values; the command takes it back
    assert main(["voucher", "verify", "--keys", str(other_public), str(platform.public), text]) == 0
    assert main(["voucher", "verify", "--keys", str(platform.keydir), "--", text]) == 0
    assert main(["voucher", "verify", text, "--keys", str(other_public)]) == EXIT_REJECTED
    assert "REJECTED (unknown_key)" in capsys.readouterr().out


def test_verify_reads_a_file_or_stdin(
    platform: Platform,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = issued(platform, capsys)
    saved = tmp_path / "scan.txt"
    saved.write_text(text + "\n")
    assert main(["voucher", "verify", "--keys", str(platform.public), f"@{saved}"]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO(text + "\r\n"))
    assert main(["voucher", "verify", "--keys", str(platform.public), "-"]) == 0
    assert capsys.readouterr().out.count("VALID voucher") == 2


def test_verify_checks_the_id_card_with_and_without_the_binding_key(
    platform: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    text = issued(platform, capsys)
    base = ["voucher", "verify", "--keys", str(platform.public)]
    bound = [*base, "--binding-key", str(platform.binding)]
    assert main([*bound, "--id-number", HOLDER, text]) == 0
    assert "matches the holder (binding hash)" in capsys.readouterr().out
    assert main([*bound, "--id-number", OTHER_PERSON, text]) == EXIT_REJECTED
    out = capsys.readouterr().out
    assert "110***********002X does NOT match the holder" in out
    assert OTHER_PERSON not in out
    assert main([*base, "--id-number", HOLDER, text]) == 0
    assert "masked digits only" in capsys.readouterr().out
    assert main([*bound, text]) == EXIT_USAGE
    assert "--binding-key needs --id-number" in capsys.readouterr().err


def test_verify_names_the_rejection(platform: Platform, capsys: pytest.CaptureFixture[str]) -> None:
    text = issued(platform, capsys)
    keys = ["voucher", "verify", "--keys", str(platform.public)]
    cases = {
        "expired": [*keys, "--today", "2100-01-01", text],
        "wrong_prefix": [*keys, "HC1:" + text[4:]],
        "bad_base45": [*keys, text[:-1] + "~"],  # not in the alphabet, whatever the length
        "oversized": [*keys, text + "0" * 1024],
    }
    for reason, argv in cases.items():
        assert main(argv) == EXIT_REJECTED, reason
        assert capsys.readouterr().out.startswith(f"REJECTED ({reason}): ")


def test_usage_errors_exit_2_with_a_clear_message(
    platform: Platform, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = issued(platform, capsys)
    missing = str(tmp_path / "nope.pub")
    assert main(["voucher", "verify", "--keys", missing, text]) == EXIT_USAGE
    assert "cannot read" in capsys.readouterr().err
    assert main(["voucher", "verify", "--keys", str(tmp_path / "binding.key"), text]) == 2
    assert "not a PEM public key" in capsys.readouterr().err
    assert main(["voucher", "verify", "--keys", str(platform.public)]) == EXIT_USAGE
    assert "give the voucher" in capsys.readouterr().err
    bad_id = issue_args(platform)
    bad_id[bad_id.index(HOLDER)] = "330106199003071237"
    assert main(bad_id) == EXIT_USAGE
    assert "cannot issue: ID number check character" in capsys.readouterr().err
    assert main(issue_args(platform, valid_until="2025-01-01")) == EXIT_USAGE
    assert "valid until is before registered on" in capsys.readouterr().err
    os.chmod(platform.binding, 0o644)
    assert main(issue_args(platform)) == EXIT_USAGE
    assert "chmod 600" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(issue_args(platform, valid_until="next year"))
    assert caught.value.code == EXIT_USAGE
    assert "'next year' is not a date" in capsys.readouterr().err


def test_runs_as_its_own_process_reading_stdin(
    platform: Platform, capsys: pytest.CaptureFixture[str]
) -> None:
    text = issued(platform, capsys)
    command = [sys.executable, "-m", "gateway.cli.voucher", "voucher", "verify"]
    ok = subprocess.run(
        [*command, "--keys", str(platform.public), "-"],
        input=text + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "VALID voucher" in ok.stdout
    bad = subprocess.run(
        [*command, "--keys", str(platform.public), "RV1:" + text[5:]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == EXIT_REJECTED
    assert bad.stdout.startswith("REJECTED (")
