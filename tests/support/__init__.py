"""Helpers shared by the tests (and the benchmarks): real gateways, brokers, platforms, devices.

- `gateway`: config files, taps, an in-process gateway, `rentgate run` as a child, a subscriber;
- `platform`: the platform's key and signed commands;
- `web`: a running gateway seeded with two landlords' data, for the web API and UI;
- `terminal`: handheld records, the terminal API served over HTTPS;
- `devices`: a sink recording what a reader reports, readers run for a block, simulators set up;
- `pki`: a throwaway CA with server and client certificates;
- `contract`: docs/asyncapi.yaml loaded, and validators for its schemas;
- `qr_frames`: camera-like frames of voucher QR codes.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository's root: docs/, examples/, systemd/ are found from here."""
