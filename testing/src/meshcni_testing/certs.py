"""Test certificates made with the ``openssl`` command: a throwaway CA and what it signs."""

from __future__ import annotations

import os
import subprocess


def openssl(directory: str, *args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)


def make_ca(directory: str, common_name: str) -> None:
    """``ca.crt`` and ``ca.key`` in ``directory``: a P-256 CA valid for two days."""
    openssl(directory, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", f"/CN={common_name}", "-keyout", "ca.key", "-out", "ca.crt",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")


def issue(directory: str, name: str, subject: str, extensions: str) -> None:
    """``<name>.crt`` and ``<name>.key`` for ``subject`` (``/CN=..``), signed by the CA in ``directory``;
    ``extensions`` is an openssl extension file's text (one ``key=value`` a line)."""
    openssl(directory, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", subject,
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
    with open(os.path.join(directory, f"{name}.ext"), "w") as f:
        f.write(extensions + "\n")
    openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext")
