"""Money units shared by every figure: amounts are stored as integers of the base currency's
minor unit (2 decimals), so one major unit (a yuan) is MINOR of them."""

from __future__ import annotations

MINOR = 100
