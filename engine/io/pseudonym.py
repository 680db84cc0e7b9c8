"""Pseudonymised customer ids: HMAC-SHA256 keyed by the SEGMINT_ID_KEY environment variable.

The key never leaves the environment: it is not written to any output, log or
manifest. The same key gives the same pseudonym for the same id, so runs and
joins stay consistent; without the key the mapping cannot be recomputed.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import polars as pl

from segmint.engine.errors import ConfigError
from segmint.engine.io.clean import ASCII_SPACE
from segmint.engine.io.ids import check_integral_ids, customer_expr

__all__ = ["KEY_ENV", "MIN_KEY_BYTES", "pseudonymize", "pseudonymized", "require_key", "key_fingerprint"]

KEY_ENV = "SEGMINT_ID_KEY"
MIN_KEY_BYTES = 32   # HMAC-SHA256's own output size, the key length RFC 2104 recommends


def pseudonymize(ids: pl.Series) -> pl.Series:
    """Hex HMAC-SHA256 of each id's text form; nulls and blank texts (no id: engine.io.canonical) are null."""
    key = require_key()
    uniques = ids.drop_nulls().unique().cast(pl.String).to_list()
    mapping = {u: hmac.new(key, u.encode(), hashlib.sha256).hexdigest() for u in uniques if u.strip(ASCII_SPACE)}
    return ids.cast(pl.String).replace_strict(mapping, default=None, return_dtype=pl.String)


def pseudonymized(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """``frame`` with the ids of ``column`` (checked, made canonical: 7.0 is customer 7) as their pseudonyms."""
    check_integral_ids(frame, column)
    return frame.with_columns(pseudonymize(frame.select(customer_expr(frame.schema, column)).to_series()).alias(column))


def require_key(asked_by: str = "--pseudonymize-ids") -> bytes:
    """The key, or a config error naming the variable to set (checked before any work); ``asked_by``: the option
    that asks for it, as the caller takes it."""
    key = os.environ.get(KEY_ENV, "").encode()
    if len(key) < MIN_KEY_BYTES:   # a short key can be found by trying keys, and with it every raw id
        what = "a secret key" if not key else (f"a key of at least {MIN_KEY_BYTES} bytes, as many ASCII characters "
                                               f"({len(key)} given)")
        msg = (f"{asked_by} needs {what}: export {KEY_ENV}=$(python -c 'import secrets; "
               f"print(secrets.token_hex(32))') and keep it to pseudonymise later runs alike (it is never written out)")
        raise ConfigError(msg)
    return key


def key_fingerprint() -> str:
    """Which key pseudonymised a run: 16 hex digits of the key's HMAC of a fixed label, in run.json. Two runs
    pseudonymised with two keys share no id, and compare would read every customer as lost and new; a key of
    32 bytes or more cannot be found from it."""
    return hmac.new(require_key(), b"segmint key fingerprint", hashlib.sha256).hexdigest()[:16]
