"""The tier scheduler: one owner of the memory budgets of engine memory, CPU RAM and disk.

The memory packages report their objects through reporters (`reporters.py`); `planner.plan` decides moves as pure
values (`objects.py` holds the nouns and their value under `memcore.value`); `executor.Scheduler` collects, plans
and carries the moves out through the same reporters, in the background. `wiring.build_scheduler` assembles it from
Settings. Which loaded adapter leaves a slot is `adapters.residency.unload_order`, shared with the request path.
"""
