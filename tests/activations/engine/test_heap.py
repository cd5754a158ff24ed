"""HeapTrimmer: a trim when the process has grown past its working set, not after every batch."""

from __future__ import annotations

import pytest

from undertow.activations.engine.heap import HeapTrimmer, resident_bytes

pytestmark = pytest.mark.skipif(resident_bytes() is None, reason="needs /proc/self/statm (Linux)")


def test_trims_first_then_only_when_the_resident_set_grows_past_the_slack():
    trim = HeapTrimmer(slack=0.05)
    trim()
    assert trim.trims == 1 and trim.ceiling is not None
    trim()
    assert trim.trims == 1  # nothing grew: the next batch keeps reusing its pages
    grown = bytearray(trim.ceiling - resident_bytes() + trim.ceiling // 10)  # zero-filled, so resident: past it
    assert resident_bytes() > trim.ceiling
    trim()
    assert trim.trims == 2
    del grown


def test_a_smaller_resident_set_never_lowers_the_ceiling():
    trim = HeapTrimmer(slack=0.05)
    trim()
    ceiling = trim.ceiling
    grown = bytearray(ceiling - resident_bytes() + ceiling // 10)
    trim()  # trims; the ceiling follows the larger set
    del grown
    trim()
    assert trim.trims == 2 and trim.ceiling >= ceiling
