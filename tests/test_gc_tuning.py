"""Worker processes tune their garbage collector once booted (libs.runtime.tune_gc)."""

from __future__ import annotations

import gc

from libs.broker import build_middleware
from libs.runtime import GC_YOUNG_THRESHOLD, GcTuning
from libs.settings import Settings


def test_a_booted_worker_freezes_its_heap_and_collects_the_young_generation_less_often() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    try:
        GcTuning().after_worker_boot(None, None)  # type: ignore[arg-type]
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
        assert gc.get_freeze_count() > frozen  # what boot made is out of every collection
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_every_worker_gets_the_tuning_unless_a_setting_turns_it_off() -> None:
    assert any(isinstance(m, GcTuning) for m in build_middleware(Settings(gc_tuning=True)))
    assert not any(isinstance(m, GcTuning) for m in build_middleware(Settings(gc_tuning=False)))
