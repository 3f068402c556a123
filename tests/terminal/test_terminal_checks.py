"""The co-ordinator's checks on the handheld, as a co-ordinator runs them: whose voucher, whose
ID card, is the permit application complete."""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import UTC, date, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
import segno

from gateway.devices.sam.simulator import SamSimulator, make_card
from gateway.domain.ids import IdNumber
from gateway.domain.signing import SigningKey
from gateway.domain.voucher import Voucher, issue
from terminal.cli import main

HOLDER = IdNumber("11010519491231002X")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A terminal set up with the platform's key (its gateway need not be up for checks)."""
    key = SigningKey.generate()
    _private, public = key.save(tmp_path / "platform")
    ca = tmp_path / "ca.pem"
    ca.write_text("placeholder: not contacted by these checks\n")
    home = tmp_path / "handheld"
    assert main(["--home", str(home), "init", "--terminal", "T-01", "--gateway",
                 "https://127.0.0.1:1", "--token", "T-01:secret", "--ca", str(ca),
                 "--platform-key", str(public)]) == 0  # fmt: skip
    _KEYS[str(home)] = key
    return home


_KEYS: dict[str, SigningKey] = {}
"""The platform's signing key for each terminal home a test set up."""


def voucher_text(key: SigningKey, valid_until: date = date(2099, 1, 1)) -> str:
    voucher = Voucher.new(
        registration_id="R-2026-0042",
        holder_name="张伟",
        id_number=HOLDER,
        binding_key=bytes(32),
        building="西溪花园7幢",
        unit="1203",
        registered_on=date(2026, 11, 2),
        valid_until=valid_until,
        issued_at=datetime(2026, 11, 2, 9, tzinfo=UTC),
    )
    return issue(voucher, key)


def qr_image(path: Path, text: str) -> Path:
    segno.make(text, error="m", micro=False).save(str(path), scale=6, border=4)
    return path


def run(home: Path, *args: str) -> int:
    return main(["--home", str(home), *args])


def test_scan_says_whose_voucher_it_is(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    image = qr_image(tmp_path / "voucher.png", voucher_text(_KEYS[str(home)]))
    assert run(home, "scan", "--image", str(image)) == 0
    out = capsys.readouterr().out
    assert "VALID" in out
    assert "110***********002X" in out
    assert "西溪花园7幢, unit 1203" in out
    assert HOLDER.value not in out


def test_scan_refuses_forged_expired_corrupt_and_empty(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    forged = qr_image(tmp_path / "forged.png", voucher_text(SigningKey.generate()))
    assert run(home, "scan", "--image", str(forged)) == 1
    assert "Not a valid voucher: unknown_key" in capsys.readouterr().out
    expired = qr_image(
        tmp_path / "expired.png", voucher_text(_KEYS[str(home)], valid_until=date(2026, 11, 3))
    )
    assert run(home, "scan", "--image", str(expired)) == 1
    assert "expired" in capsys.readouterr().out
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert run(home, "scan", "--image", str(corrupt)) == 2
    assert "not a readable image" in capsys.readouterr().err
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((480, 640, 3), 200, np.uint8))
    assert run(home, "scan", "--image", str(blank)) == 2
    assert "No QR code found" in capsys.readouterr().out


def test_scan_reads_a_video_and_needs_the_platform_key(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cv2.imread(str(qr_image(tmp_path / "v.png", voucher_text(_KEYS[str(home)]))))
    frame = np.full((720, 1280, 3), 235, np.uint8)
    y, x = 200, 500
    frame[y : y + code.shape[0], x : x + code.shape[1]] = code
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (1280, 720))
    for index in range(20):
        writer.write(frame if index >= 8 else np.full_like(frame, 120))
    writer.release()
    capsys.readouterr()
    assert run(home, "scan", "--video", str(video)) == 0
    assert "VALID" in capsys.readouterr().out
    bare = tmp_path / "bare"
    assert run(bare, "scan", "--video", str(video)) == 2
    assert "no platform keys" in capsys.readouterr().err


def test_read_id_card_on_the_sam_reader(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    card = dataclasses.replace(
        make_card(random.Random(5), today=date(2026, 11, 28)),
        name="李娜",
        valid_to=None,
    )
    with SamSimulator() as reader:
        reader.present(card)
        capsys.readouterr()
        assert run(home, "read-id", "--sam", str(reader.path), "--seconds", "10") == 0
        out = capsys.readouterr().out
        assert card.id_number not in out
        assert card.masked_id in out
        assert "李娜" in out
        assert "长期" in out
        reader.remove()
        assert run(home, "read-id", "--sam", str(reader.path), "--seconds", "1") == 1
        assert "No ID card read" in capsys.readouterr().out
    assert run(home, "read-id", "--sam", "/dev/nonexistent-tty", "--seconds", "1") == 1
    assert "reader failed" in capsys.readouterr().err


def test_precheck_prints_the_one_complete_list_of_missing_materials(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    application = {
        "birth_date": "1990-05-01",
        "registered_since": "2025-01-10",
        "residence": {
            "lease_start": "2025-01-01",
            "lease_end": "2027-01-01",
            "owner_title": "ownership",
            "police_registered": True,
            "commercial_housing": False,
        },
        "documents": ["application_form", "photo"],
    }
    path = tmp_path / "application.json"
    path.write_text(json.dumps(application))
    capsys.readouterr()
    assert run(home, "precheck", str(path), "--today", "2026-11-28") == 1
    out = capsys.readouterr().out
    assert out.startswith("INCOMPLETE")
    missing = [line for line in out.splitlines() if line.startswith("  - ")]
    assert len(missing) >= 2  # the ID document and the lease contract at least, all at once
    application["documents"] = [
        "application_form", "photo", "id_document", "lease_contract", "owner_title_certificate",
        "rental_registration",
    ]  # fmt: skip
    path.write_text(json.dumps(application))
    assert run(home, "precheck", str(path), "--today", "2026-11-28") == 0
    assert capsys.readouterr().out.startswith("ELIGIBLE")
    application["registered_since"] = "2026-10-01"
    path.write_text(json.dumps(application))
    assert run(home, "precheck", str(path), "--today", "2026-11-28") == 1
    assert "less than 6 months" in capsys.readouterr().out
    path.write_text("{broken")
    assert run(home, "precheck", str(path)) == 2
    assert "not JSON" in capsys.readouterr().err
