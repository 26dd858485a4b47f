#!/usr/bin/env bash
# Regenerates the test keys. They are test-only, checked in so tests need neither openssl nor
# slow RSA key generation in debug builds. Run from this folder: `bash gen.sh`.
set -euo pipefail
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key.pem 2>/dev/null
openssl pkey -in rsa.key.pem -pubout -out rsa.pub.pem
openssl rsa -in rsa.key.pem -RSAPublicKey_out -out rsa.pkcs1.pub.pem 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.key.pem
openssl pkey -in ec.key.pem -pubout -out ec.pub.pem
openssl genpkey -algorithm ED25519 -out ed.key.pem
openssl pkey -in ed.key.pem -pubout -out ed.pub.pem
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out other-rsa.key.pem 2>/dev/null
# A JWKS with the RSA and EC public keys under kids "rsa-1" and "ec-1".
python3 - <<'PY'
import base64, json, subprocess
def b64u(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def der(args): return subprocess.run(["openssl"] + args + ["-outform", "DER"], check=True, capture_output=True).stdout
rsa_txt = subprocess.run(["openssl", "rsa", "-pubin", "-in", "rsa.pub.pem", "-noout", "-modulus"], check=True, capture_output=True, text=True).stdout
n = bytes.fromhex(rsa_txt.strip().split("=")[1])
ec = der(["pkey", "-pubin", "-in", "ec.pub.pem"])[-64:]   # uncompressed point: 04 || x || y
jwks = {"keys": [
    {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "n": b64u(n), "e": "AQAB"},
    {"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": b64u(ec[:32]), "y": b64u(ec[32:])},
]}
open("jwks.json", "w").write(json.dumps(jwks, indent=2) + "\n")
PY
