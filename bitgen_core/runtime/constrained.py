"""The trace's closing clause is the selection, by construction (constrained decoding).

A BitGen trace reads "environment: … → …; needs: … → …; selected: <robots>". The decoder
writes it freely, so its last clause could name robots the selector did not choose (the
shipped model's dev traces agreed with the selection only 55% of the time). Once the decoder
has written the `selected:` marker, the rest is therefore not sampled: the chosen robots'
names are forced token by token, then [EOS]. The trace's reasoning stays the model's own, and
its conclusion is the selection the caller receives.

Torch-free: the runtime (engine.py) and the torch model's generate path (model.py) share
this, so the two produce the same traces.

    clause = SelectionClause(tokenizer, catalog)
    chosen = chosen_robots(keys_best_first, probs_best_first)      # p >= 0.5, 1..3 robots
    forced = clause.forced_ids(chosen)                              # names, then [EOS]
    clause.marker_ends_at(generated_ids)                            # True right after "selected:"
"""
from __future__ import annotations

from typing import Sequence

SELECTED_MARKER = "selected:"
CHOSEN_THRESHOLD = 0.5   # what training/metrics.py and GRPO count as the selector's choice
CHOSEN_MAX = 3


def chosen_robots(robots: Sequence[str], confidences: Sequence[float],
                  threshold: float = CHOSEN_THRESHOLD, max_k: int = CHOSEN_MAX) -> list[str]:
    """The robots the selector commits to, from robots ranked best first with their
    confidences: p >= threshold, at least the top-1, at most max_k, best first."""
    picked = [r for r, p in zip(robots, confidences) if p >= threshold][:max_k]
    return picked or list(robots[:1])


class SelectionClause:
    def __init__(self, tokenizer, catalog):
        self.tokenizer, self.catalog = tokenizer, catalog
        self.marker = tuple(tokenizer.encode(SELECTED_MARKER))
        self.eos = tokenizer.eos_id

    def marker_ends_at(self, ids: Sequence[int]) -> bool:
        """True when `ids` (the trace so far) ends with the `selected:` marker."""
        m = len(self.marker)
        return len(ids) >= m and tuple(ids[-m:]) == self.marker

    def forced_ids(self, chosen_keys: Sequence[str]) -> list[int]:
        """Token ids of the chosen robots' catalog names (", "-separated), then [EOS]."""
        names = ", ".join(self.catalog.get(k).name for k in chosen_keys)
        return list(self.tokenizer.encode(names)) + [self.eos]
