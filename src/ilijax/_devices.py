"""How many devices to split work over (the training engine's members, the samplers'
observations)."""

from __future__ import annotations

from collections.abc import Sequence


def split_count(sizes: Sequence[int], num_devices: int) -> int:
    """The number of devices ``k`` (1 to ``num_devices``) to split items over, one group of
    ``sizes[g]`` items at a time, each group padded to a multiple of ``k``.

    ``k`` minimises the work per device, ``sum(ceil(n / k))``, and among those the padded
    total, ``sum(k * ceil(n / k))``: 2 items on 4 devices use 2 devices (not 4 with 2 copies
    that do nothing), 5 use 3 (padded to 6, not to 8), 4 use 4. ``k == 1`` means no split.
    """
    sizes = [int(n) for n in sizes]
    best, best_cost = 1, None
    for k in range(1, max(1, int(num_devices)) + 1):
        per_device = sum(-(-n // k) for n in sizes)
        cost = (per_device, k * per_device)
        if best_cost is None or cost < best_cost:
            best, best_cost = k, cost
    return best
