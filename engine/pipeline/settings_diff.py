"""Settings under which two runs' features mean different things, though they have the same names: lines
grouped into orders or not (frequency, order value), the CLV's horizon, unit, rate and model, the lifecycle
thresholds (the status rates). ``run --previous`` refuses what would make its warm start and matching compare
other quantities; ``compare`` says what differs beside its changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from segmint.engine.analytics.clv import CLV_COLUMNS
from segmint.engine.config import ClvConfig, RunConfig
from segmint.engine.errors import ConfigError

__all__ = ["meaning", "manifest_meaning", "differences", "check_previous_meaning", "check_previous_clv_model"]


def meaning(order: str | None, clv: ClvConfig | None, lifecycle: Mapping[str, float],
            model: str | None = None) -> dict[str, str]:
    """What a run's features mean, setting by setting, as text a message quotes. ``order``: the order column,
    if any (its name may change from month to month; whether lines are grouped may not). ``clv``: None where
    the run computes no CLV. ``model``: the purchase model the CLV was fitted with, where known: "auto" is a
    choice made on each month's data, and its two outcomes are different CLVs."""
    return {
        "orders": "lines grouped by an order column" if order else "each line an order (no --order-col)",
        "CLV": "none" if clv is None else (f"{clv.horizon_units:g} {clv.time_unit}s, "
                                           f"{clv.discount_rate * 100:g}% a year, {model or clv.purchase_model}"),
        "lifecycle": ", ".join(f"{k}={float(v):g}" for k, v in sorted(lifecycle.items())),
    }


def manifest_meaning(manifest: Mapping[str, Any]) -> dict[str, str] | None:
    """``meaning`` of a run from its run.json; None where it records no config (an earlier segmint)."""
    config = manifest.get("config")
    if not config:
        return None
    clv = config.get("clv") or {}
    known = {k: v for k, v in clv.items() if k in ClvConfig.__dataclass_fields__}
    found = meaning((manifest.get("columns") or config.get("columns") or {}).get("order"), ClvConfig(**known),
                    (config.get("features") or {}).get("lifecycle") or {},
                    (manifest.get("clv") or {}).get("purchase_model"))
    # CLV settings only where the run has a CLV: a fit skipped on one month's data is no setting of that run,
    # and without a CLV in one run there are no CLV changes to explain.
    if not clv.get("enabled", True) or "skipped" in (manifest.get("clv") or {"skipped": True}):
        del found["CLV"]
    return found


def differences(a: Mapping[str, str], b: Mapping[str, str]) -> list[str]:
    """One line per setting the two differ in (of those both have)."""
    return [f"{key}: {a[key]} against {b[key]}" for key in a if key in b and a[key] != b[key]]


def check_previous_meaning(previous: Any, cfg: RunConfig) -> None:
    """Refuse a previous model whose features mean other things than this run's under the same names: its
    centroids would be compared with other quantities. Orders always (frequency and order value are among
    the default cluster features); the CLV where this run clusters on a CLV column."""
    clv_clustered = _clv_clustered(cfg)
    fitted = previous.clv.purchase_model if previous.clv is not None else None
    old = meaning(previous.columns.order, previous.clv_config if clv_clustered else None, {}, fitted)
    # "auto" chooses on this month's data: taken as the previous model's here, checked once fitted.
    chosen = fitted if cfg.clv.purchase_model == "auto" else None
    new = meaning(cfg.columns.order, cfg.clv if clv_clustered and previous.clv_config is not None else None, {},
                  chosen)
    _refuse(differences(old, new))


def check_previous_clv_model(previous: Any, cfg: RunConfig, clv: Any) -> None:
    """Once this run's CLV is fitted: refuse where it clusters on a CLV column and ``purchase_model = "auto"``
    chose another model than the previous run's (the BG/NBD on a longer history where a short one gave the
    NBD): the centroids measure other CLVs under one name, and a warm start went through, exit 0."""
    if not _clv_clustered(cfg) or previous.clv is None or clv is None:
        return
    if previous.clv.purchase_model != clv.purchase_model:
        _refuse([f"CLV: {previous.clv.purchase_model} against {clv.purchase_model} (purchase_model "
                 f"{cfg.clv.purchase_model!r} chose it on this run's data; pin it with [clv] purchase_model = "
                 f"\"{previous.clv.purchase_model}\" to keep the previous one)"])


def _clv_clustered(cfg: RunConfig) -> bool:
    return any(c in CLV_COLUMNS for c in (cfg.features.cluster_features or ()))


def _refuse(differ: list[str]) -> None:
    if differ:
        msg = (f"--previous was made with other settings than this run ({'; '.join(differ)}), so its segments "
               f"measure other quantities under the same names: run as it did, or without --previous (segment "
               f"ids then start afresh)")
        raise ConfigError(msg)
