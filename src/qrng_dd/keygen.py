"""``qrng-dd keygen``: fresh secrets from the OS CSPRNG, printed once, stored nowhere."""

from __future__ import annotations

import argparse
import secrets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-key", action="store_true", help="print an API key instead")


def run(args: argparse.Namespace) -> int:
    # 32 bytes = 256 bits for the HMAC key (DESIGN §3 minimum); API keys carry 192 bits in
    # URL-safe text so they survive query strings unescaped.
    print(secrets.token_urlsafe(24) if args.api_key else secrets.token_hex(32))
    return 0
