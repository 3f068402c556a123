"""`rentgate platform provision`: issue a broker identity and print the broker rules for it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.cli.exit_codes import EXIT_CONFIG


def add_parser(actions: Any) -> None:
    """Register `provision` under `rentgate platform`."""
    provision = actions.add_parser(
        "provision",
        help="issue a gateway's (or the platform's) MQTT client certificate from the CA",
        description="Issue a client certificate (CN = gateway id, or platform-NAME) signed by "
        "the platform's CA, and print the broker rules that identity gets.",
    )
    who = provision.add_mutually_exclusive_group(required=True)
    who.add_argument("--gateway", help="gateway id, e.g. GW-0001 (becomes the certificate's CN)")
    who.add_argument("--platform", help="a platform identity's name (CN platform-NAME)")
    provision.add_argument("--ca-cert", type=Path, required=True, help="the CA certificate (PEM)")
    provision.add_argument("--ca-key", type=Path, required=True, help="the CA's key (PEM)")
    provision.add_argument("--out", type=Path, required=True, help="where to write CN.pem/.key")
    provision.add_argument("--days", type=int, default=825, help="validity (825 days)")


def run_provision(args: argparse.Namespace) -> int:
    from gateway.sync import identities

    try:
        if args.gateway is not None:
            common_name = identities.gateway_common_name(args.gateway)
            rules = identities.gateway_rules(common_name)
        else:
            common_name = identities.platform_common_name(args.platform)
            rules = identities.platform_rules(common_name)
        issued = identities.issue(
            common_name, ca_cert=args.ca_cert, ca_key=args.ca_key, out=args.out, days=args.days
        )
    except identities.ProvisioningError as exc:
        print(f"rentgate platform provision: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"identity {issued.common_name}, valid until {issued.not_after:%Y-%m-%d}")
    print(f"  certificate: {issued.certificate}")
    print(f"  key:         {issued.key} (mode 0600; it never leaves the device it is for)")
    print()
    if args.gateway is not None:
        print("Gateway config:")
        print('  [mqtt]\n  url = "mqtts://BROKER:8883"\n  ca = "BROKER-CA.pem"')
        print(f'  cert = "{issued.certificate}"\n  key = "{issued.key}"')
        print()
        print(
            "Broker rules (config/mosquitto/rentgate.acl grants these to every gateway with"
            " `pattern` lines; for brokers without patterns, per identity):"
        )
    else:
        print("Broker rules (add to config/mosquitto/rentgate.acl; the only identities")
        print("allowed to publish commands):")
    print(rules)
    return 0
