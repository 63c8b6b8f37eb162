#!/bin/sh
# Stand-in for a UEFI Secure Boot signer (tests only): writes a deterministic <file>.sig from the file's SHA-256.
# A real hook writes a PKCS#7 detached signature made with a db key (docs/secure-boot.md).
set -eu
[ -f "$1" ] || { echo "no such file: $1" >&2; exit 1; }
printf 'edgeslim-standin-signature sha256:%s\n' "$(sha256sum "$1" | cut -d' ' -f1)" > "$1.sig"
