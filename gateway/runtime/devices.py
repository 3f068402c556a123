"""The one place that turns device config into drivers: readers, their OSDP lines, and locks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Config, DoorSection, OsdpDevice, SamDevice
from gateway.devices.line.reader import LineReader
from gateway.devices.osdp.reader import OsdpBus, OsdpDeviceConfig, OsdpReader, OutputMode
from gateway.devices.protocols import Lock, Reader
from gateway.devices.sam.reader import SamCardReader
from gateway.devices.sim import SimLock


@dataclass(frozen=True)
class DeviceSet:
    """The gateway's devices: every reader by name, every door's lock, the OSDP lines."""

    readers: dict[str, Reader]
    locks: dict[str, Lock]
    osdp_lines: list[OsdpBus]


def build_devices(config: Config, readers: Sequence[Reader] | None = None) -> DeviceSet:
    """Drivers for the configured devices; `readers` replaces them (tests, benchmarks)."""
    lines: list[OsdpBus] = []
    if readers is None:
        readers, lines = _configured_readers(config)
    by_name = {reader.name: reader for reader in readers}
    relays: dict[str, OsdpReader] = {}
    for reader in (reader for line in lines for reader in line.readers):
        relays.setdefault(reader.door, reader)  # the first reader at a door drives its strike
    locks = {door.name: _lock(door, relays) for door in config.all_doors()}
    return DeviceSet(by_name, locks, lines)


def _configured_readers(config: Config) -> tuple[list[Reader], list[OsdpBus]]:
    """Line and SAM readers one by one; OSDP readers grouped by the serial line they share."""
    readers: list[Reader] = []
    on_line: dict[Path, list[OsdpDeviceConfig]] = {}
    bauds: dict[Path, int] = {}
    for index, device in enumerate(config.devices):
        name = config.reader_name(index)
        if isinstance(device, SamDevice):
            readers.append(SamCardReader(name, device.door, device.path, device.baud))
        elif isinstance(device, OsdpDevice):
            bauds[device.path] = device.baud
            on_line.setdefault(device.path, []).append(_osdp_device(name, device))
        else:
            readers.append(
                LineReader(name, device.door, device.path, device.credential, baud=device.baud)
            )
    lines = [OsdpBus(path, bauds[path], devices) for path, devices in on_line.items()]
    for line in lines:
        readers.extend(line.readers)
    return readers, lines


def _osdp_device(name: str, device: OsdpDevice) -> OsdpDeviceConfig:
    return OsdpDeviceConfig(
        name,
        device.door,
        device.address,
        device.key_file,
        install=device.install,
        output_no=device.output,
        output_mode=OutputMode(device.output_mode),
        led_number=device.led,
        contact_input=device.contact_input,
        exit_input=device.exit_input,
        contact_open_level=device.contact_open_level,
    )


def _lock(door: DoorSection, relays: dict[str, OsdpReader]) -> Lock:
    """The door's strike: its OSDP reader's relay, or a simulated lock."""
    relay = relays.get(door.name) if door.lock != "sim" else None
    return relay if relay is not None else SimLock(door.name)
