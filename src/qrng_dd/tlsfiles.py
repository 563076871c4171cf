"""Startup checks of TLS files: load them the way the TLS stack will, and name the culprit.

Every process that takes a CA bundle or a certificate and key (gateway ``QRNG_TLS_*``, collector
``QRNG_GATEWAY_CA_FILE`` / ``QRNG_GATEWAY_CLIENT_*``, ``QRNG_APPLIANCE_CA_FILE``) calls
:func:`check_tls_files` while validating its settings, so a bad file is one startup line that
names its variable instead of an OpenSSL traceback on the first connection.
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["check_tls_files"]


class _EncryptedKeyError(Exception):
    """Raised by :func:`_refuse_passphrase`: the key file needs a passphrase."""


def _refuse_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key, and a
    # service started by systemd or Kubernetes would hang there instead of failing.
    raise _EncryptedKeyError


def _check_readable(variable: str, path: Path) -> None:
    """Raise the one-line error for ``variable`` if ``path`` is not a file we can read."""
    if not path.is_file():
        msg = f"{variable}: {path} is not a readable file"
        raise ValueError(msg)
    try:
        path.read_bytes()
    except OSError as err:
        msg = f"{variable}: cannot read {path}: {err.strerror or err}"
        raise ValueError(msg) from err


def _ssl_reason(err: ssl.SSLError) -> str:
    """`` (OPENSSL_REASON)`` when OpenSSL gave one, else nothing."""
    return f" ({err.reason})" if err.reason else ""


def check_tls_files(
    ca: tuple[str, Path | None],
    cert: tuple[str, Path | None],
    key: tuple[str, Path | None],
) -> None:
    """Load a CA bundle and a certificate + key the way the TLS stack will, naming the culprit.

    Each argument is ``(variable name, path or None)``. Loading them here, at settings
    validation, turns a missing, unreadable, non-PEM, encrypted or mismatched file into one
    line that names its variable at startup, instead of an OpenSSL traceback (or a terminal
    passphrase prompt) on the first connection.

    Raises:
        ValueError: the message starts with the variable at fault.
    """
    (cert_var, cert_path), (key_var, key_path) = cert, key
    if (cert_path is None) != (key_path is None):
        msg = f"{cert_var} and {key_var}: set both or neither"
        raise ValueError(msg)
    for variable, path in (ca, cert, key):
        if path is not None:
            _check_readable(variable, path)
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for variable, path in (ca, cert):
        if path is None:
            continue
        try:
            # Also for the client certificate: it tells "no certificate in this file" apart
            # from a bad key, which load_cert_chain reports alike ("PEM lib").
            scratch.load_verify_locations(cafile=path)
        except ssl.SSLError as err:
            msg = f"{variable}: {path} holds no PEM certificate{_ssl_reason(err)}"
            raise ValueError(msg) from None
    if cert_path is None or key_path is None:
        return
    try:
        scratch.load_cert_chain(cert_path, key_path, password=_refuse_passphrase)
    except _EncryptedKeyError:
        msg = (
            f"{key_var}: {key_path} is encrypted; give it unencrypted "
            "(and protect it with file permissions instead)"
        )
        raise ValueError(msg) from None
    except ssl.SSLError as err:
        if err.reason == "KEY_VALUES_MISMATCH":
            msg = f"{key_var}: {key_path} is not the private key of the certificate in {cert_var}"
        else:
            msg = f"{key_var}: {key_path} is not a PEM private key{_ssl_reason(err)}"
        raise ValueError(msg) from None
