"""A certificate authority made for one test run with the openssl command: the portal's
certificate, a modality's, and a stranger's signed by another authority."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _authority(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert), cwd=folder)
    return key, cert


def _signed(folder: Path, name: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    key, csr, cert = (folder / f"{name}.key", folder / f"{name}.csr",
                      folder / f"{name}.crt")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
             "-keyout", str(key), "-out", str(csr), cwd=folder)
    ext = folder / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
             "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert),
             cwd=folder)
    return key, cert


@dataclass(frozen=True)
class Pki:
    ca: Path  # the site's authority (its certificate)
    portal: tuple[Path, Path]  # key, certificate
    modality: tuple[Path, Path]
    stranger: tuple[Path, Path]  # signed by another authority


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca = _authority(folder, "site-ca")
    other = _authority(folder, "other-ca")
    return Pki(ca=ca[1], portal=_signed(folder, "portal", ca),
               modality=_signed(folder, "modality", ca),
               stranger=_signed(folder, "stranger", other))
