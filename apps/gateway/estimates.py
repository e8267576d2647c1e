"""Prompt estimates corrected by their observed drift, per model, for TPM reservations.

The protocols' prompt estimates (about 4 UTF-8 bytes a token, protocol/openai.py and
protocol/anthropic.py) undercount code and JSON. Every settled request whose upstream
reported its token counts observes the drift ``reported / estimate`` of its model: into
the histogram ``tollgate_prompt_estimate_ratio`` and into a running ratio here. Once a
model has ``min_observations``, admission reserves ``ceil(estimate × scale)`` prompt
tokens for rate limits, the scale being that ratio held within ``[scale_min,
scale_max]`` (never below 1: an estimate under the real count under-reserves, which
lets parallel requests past a TPM limit), and never more than the request's prompt
bound (unless the raw estimate already is). Budgets reserve the bound, and the ledger's
estimates (when an upstream reports nothing) stay the raw ones: neither reads this.

The running ratio is token-weighted, ``mean(reported) / mean(estimate)`` over an
exponentially weighted window of ``window`` requests (a plain mean until there are
that many): what a TPM limit counts is the sum of tokens, so a short prompt whose chat
template triples it moves the ratio by its few tokens, not by its ratio.

Per process, not in Redis: admission reads it with no round trip of its own, and every
process behind a load balancer sees a sample of the same traffic, so each converges on
the same ratio within its first ``min_observations`` requests of a model.
"""

from decimal import ROUND_CEILING, Decimal

from prometheus_client import Histogram

from apps.gateway.metrics import prompt_estimate_ratio

# Scales are integer thousandths: ``estimate × scale`` is then exact integer arithmetic
# (in floats, 100 × 1.1 rounds up to 111).
PER_MILLE = 1000
# Models are catalog names, so this is never reached in practice; it bounds memory
# should a catalog be renamed over and over in one process's lifetime.
MAX_MODELS = 10_000


class _Drift:
    __slots__ = ("observations", "reported", "estimated", "histogram")

    def __init__(self, histogram: Histogram) -> None:
        self.observations = 0
        self.reported = 0.0  # weighted means of the reported and estimated prompt tokens
        self.estimated = 0.0
        self.histogram = histogram


class PromptEstimates:
    """The per-model drift of prompt estimates, and the reservations scaled by it."""

    def __init__(
        self,
        *,
        scale_min: str | float | Decimal,
        scale_max: str | float | Decimal,
        min_observations: int,
        window: int,
    ) -> None:
        low = max(_per_mille(scale_min), PER_MILLE)
        self._min = low
        self._max = max(_per_mille(scale_max), low)
        self._min_observations = max(min_observations, 1)
        self._window = max(window, 1)
        self._weight = 1 / self._window
        self._drift: dict[str, _Drift] = {}
        # Per model with enough observations: its scale in thousandths; what admission reads.
        self._scales: dict[str, int] = {}

    def reservation(self, model: str, estimate: int, bound: int) -> int:
        """The prompt tokens a TPM limit reserves for a request of ``model`` estimated at
        ``estimate`` with the prompt bound ``bound``."""
        scale = self._scales.get(model, self._min)
        if scale == PER_MILLE:
            return estimate
        scaled = -(-estimate * scale // PER_MILLE)
        return scaled if scaled <= bound else max(bound, estimate)

    def observe(self, model: str, reported: int, estimate: int) -> None:
        """A settled request of ``model`` (a catalog name: it becomes a label) whose
        upstream reported ``reported`` prompt tokens, estimated at ``estimate``; both > 0."""
        drift = self._drift.get(model)
        if drift is None:
            if len(self._drift) >= MAX_MODELS:
                self._drift.clear()
                self._scales.clear()
            drift = self._drift[model] = _Drift(prompt_estimate_ratio(model))
        drift.histogram.observe(reported / estimate)
        drift.observations = seen = drift.observations + 1
        weight = self._weight if seen > self._window else 1 / seen
        drift.reported += (reported - drift.reported) * weight
        drift.estimated += (estimate - drift.estimated) * weight
        if seen >= self._min_observations:
            scale = round(drift.reported * PER_MILLE / drift.estimated)
            if scale < self._min:
                scale = self._min
            elif scale > self._max:
                scale = self._max
            self._scales[model] = scale


def _per_mille(value: str | float | Decimal) -> int:
    """A scale setting (a number or its string) in thousandths, rounded up."""
    thousandths = Decimal(str(value)) * PER_MILLE
    return int(thousandths.to_integral_value(rounding=ROUND_CEILING))
