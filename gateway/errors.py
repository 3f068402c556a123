"""The root of every error Rentgate raises on purpose, and the tree under it.

Callers that must survive anything Rentgate refuses catch `RentgateError`;
callers that branch catch a leaf (most carry an enum `reason`). Errors of a
lower layer (sqlite3, OSError from a device, paho) are translated at one
boundary each, with the cause kept (`raise StoreError(...) from exc`):
`gateway.store.errors.translated` for SQLite, the serial helper and the
drivers for devices, `gateway.sync.link` for MQTT.

Errors about a value (a malformed ID number, a forged voucher) are also
`ValueError`s, and a missing capture a `LookupError`, so that code written
against the standard library's meaning keeps working.

    RentgateError
    ├── ConfigError ................. gateway.config: the config file, every problem at once
    ├── domain (also ValueError)
    │   ├── CredentialError ......... gateway.domain.credentials: not a credential (reason)
    │   ├── ActionRefused ........... gateway.domain.keycards: not allowed in the card's state
    │   ├── SigningKeyError ......... gateway.domain.signing
    │   ├── SealingKeyError, SealError  gateway.domain.sealed_box: a box that will not open
    │   ├── Base45Error, CoseError .. gateway.domain.base45, gateway.domain.cose
    │   ├── VoucherError ............ gateway.domain.voucher: forged, expired, not a voucher
    │   └── CommandRejected ......... gateway.domain.signed_commands (not a ValueError)
    ├── devices
    │   ├── ReaderError ............. gateway.devices.protocols: device cannot be opened or read
    │   ├── SamError ................ gateway.devices.sam.frames: a bad SAM frame
    │   └── OsdpKeyFileError ........ gateway.devices.osdp.keys
    ├── StoreError .................. gateway.store.errors: anything SQLite refused
    │   ├── StorageFullError, SchemaTooNewError, KeyFileError
    │   ├── AccountError ............ gateway.store.users
    │   ├── AllowlistVersionError, AllowlistConflictError ... gateway.store.allowlist
    │   └── CredentialTakenError .... gateway.store.registry
    ├── StaleStatusError ............ gateway.store.residents: an older platform status
    ├── LinkLostError ............... gateway.sync.link: the MQTT session ended
    ├── BrokerError ................. gateway.sync.local_broker: the embedded Mosquitto
    ├── CaptureError (LookupError) .. gateway.doors.enrol_by_tap
    ├── SettingError (ValueError) ... gateway.residence.runtime_settings
    ├── NotifyAddressError (ValueError) ... gateway.ops.sd_notify
    ├── AuthFailure, DirectoryError . gateway.api.auth, gateway.api.directory (become HTTP)
    ├── InstallError, UsageError .... gateway.cli.service, gateway.cli.voucher
    └── terminal: TerminalConfigError, QueueError, SyncError, CheckError, FrameError (ValueError)
"""

from __future__ import annotations


class RentgateError(Exception):
    """Something Rentgate refused or could not do, said in words a person can act on."""
