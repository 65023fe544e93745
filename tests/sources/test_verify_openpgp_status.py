"""Reading gpg's status lines (``git verify-commit --raw``) on plain data: a good signature counts only when
the key gpg names is one of the repository's trusted keys, whatever else gpg's home happens to hold (a key
gpg imported from the signature itself with auto-key-import, or a keyring left from another run)."""

from __future__ import annotations

from fleet.sources.git import verify

TRUSTED = "A" * 40
OTHER = "B" * 40


def _status(primary: str) -> str:
    # GOODSIG <long keyid> <uid>; VALIDSIG <fpr> <date> <ts> <expire> <version> <reserved> <pkalgo> <hashalgo>
    # <class> <primary fpr>: the lines gpg writes for a good signature (doc/DETAILS)
    return "\n".join(
        [
            "[GNUPG:] NEWSIG",
            f"[GNUPG:] KEY_CONSIDERED {primary} 0",
            f"[GNUPG:] GOODSIG {primary[-16:]} Someone <someone@example.test>",
            f"[GNUPG:] VALIDSIG {primary} 2026-12-02 1796212800 0 4 0 22 10 00 {primary}",
            "[GNUPG:] TRUST_UNDEFINED 0 pgp",
        ]
    )


def _keys() -> list[verify.TrustedKey]:
    return [verify.TrustedKey("alice", verify.KEY_OPENPGP, "-----BEGIN PGP PUBLIC KEY BLOCK-----", TRUSTED)]


def test_a_good_signature_by_a_trusted_key_is_verified_with_its_name() -> None:
    outcome = verify._openpgp_outcome(0, _status(TRUSTED), _keys())
    assert (outcome.status, outcome.key_name, outcome.fingerprint) == (verify.VERIFIED, "alice", TRUSTED)


def test_a_good_signature_by_a_key_that_is_not_trusted_is_not_verified() -> None:
    outcome = verify._openpgp_outcome(0, _status(OTHER), _keys())
    assert outcome.status == verify.UNTRUSTED
    assert OTHER in outcome.reason and outcome.key_name == ""
